package delta

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/pibake/pibake/internal/sparse"
)

// Diff is a byte range of a checked image that is not what the build
// made.
type Diff struct {
	Start, End int64
	// Where names the partition (from the base's table).
	Where string
	// Pibake is true for a range inside pibake's own changes.
	Pibake bool
	// Exact is true when the range was found byte by byte against a
	// reference; otherwise it is the chunk (or pibake's ranges) that
	// holds a difference.
	Exact bool
}

func (d Diff) String() string {
	what := "differs from the base image"
	if d.Pibake {
		what = "differs inside pibake's own changes"
	}
	if !d.Exact {
		what += " (somewhere in this range)"
	}
	return fmt.Sprintf("%s, bytes %d-%d (%s): %s", d.Where, d.Start, d.End-1, humanSize(d.End-d.Start), what)
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Reference holds the exact bytes to compare a chunk that differs with:
// the node's own built image (Node true: every byte), or the base image
// (every byte outside pibake's writes).
type Reference struct {
	R    io.ReaderAt
	Node bool
}

// Result is what Compare found.
type Result struct {
	// SHA256 is that of the candidate's first node.Size bytes.
	SHA256 string
	// Short is set when the candidate is smaller than the image.
	Short bool
	Diffs []Diff
}

// OK reports whether the candidate is the node's image.
func (r *Result) OK(n *Node) bool { return !r.Short && len(r.Diffs) == 0 && r.SHA256 == n.SHA256 }

// Compare reads the candidate (an image file, or a device holding one
// past its end) once and checks every chunk: chunks pibake did not touch
// against the base's digests, chunks it touched against their masked
// digests, the whole against the image's SHA-256. A chunk that differs is
// narrowed to exact byte ranges when ref is given.
func Compare(ctx context.Context, cand io.ReaderAt, candSize int64, base *Base, n *Node, ref *Reference) (*Result, error) {
	res := &Result{Short: candSize < n.Size}
	masked := map[int]string{}
	for _, c := range n.Masked {
		masked[c.Index] = c.SHA256
	}
	whole := sha256.New()
	buf, scratch, refBuf := make([]byte, base.ChunkSize), make([]byte, base.ChunkSize), make([]byte, base.ChunkSize)
	pibakeExact := false
	for k := range base.Chunks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		off := int64(k) * base.ChunkSize
		size := min(base.ChunkSize, n.Size-off)
		b := buf[:size]
		if err := readFull(cand, b, off); err != nil {
			return nil, fmt.Errorf("read at byte %d: %w", off, err)
		}
		whole.Write(b)
		want, isMasked := masked[k]
		check := b
		if isMasked {
			check = scratch[:size]
			copy(check, b)
			mask(check, off, n.Written)
		} else {
			want = base.Chunks[k]
		}
		baseDiffers := chunkSum(check) != want
		if !baseDiffers && !(isMasked && ref != nil && ref.Node) {
			continue
		}
		if ref == nil {
			res.add(base, off, off+size, false, false)
			continue
		}
		if err := res.narrow(ref, base, n, b, refBuf[:size], off, want, isMasked); err != nil {
			return nil, err
		}
		if isMasked && ref.Node {
			pibakeExact = true
		}
	}
	res.SHA256 = hex.EncodeToString(whole.Sum(nil))
	if res.SHA256 != n.SHA256 && len(res.Diffs) == 0 && !pibakeExact && !res.Short {
		// Nothing outside pibake's writes changed, yet the image differs:
		// the change is in pibake's own bytes, which no digest covers.
		for _, w := range n.Written {
			res.add(base, w.Start, w.End, true, false)
		}
	}
	return res, nil
}

// narrow reads the reference's bytes at off into r and adds the exact
// ranges where the candidate's bytes b differ from them. A base reference
// is first checked against the record, so a wrong base is an error, not
// a list of false differences.
func (res *Result) narrow(ref *Reference, base *Base, n *Node, b, r []byte, off int64, want string, isMasked bool) error {
	if err := readFull(ref.R, r, off); err != nil {
		return fmt.Errorf("read the reference at byte %d: %w", off, err)
	}
	if !ref.Node {
		mask(r, off, n.Written)
		if !isMasked {
			want = base.Chunks[off/base.ChunkSize]
		}
		if chunkSum(r) != want {
			return fmt.Errorf("the base image given is not this build's base: its bytes %d-%d differ from the record", off, off+int64(len(r))-1)
		}
	}
	res.exact(base, b, r, off, n.Written, ref.Node)
	return nil
}

// exact adds the byte ranges where got differs from want (both the bytes
// at off); with a base reference only bytes outside written count.
func (res *Result) exact(base *Base, got, want []byte, off int64, written []Range, node bool) {
	start := -1
	flush := func(end int) {
		if start >= 0 {
			s, e := off+int64(start), off+int64(end)
			res.add(base, s, e, inside(written, s), true)
			start = -1
		}
	}
	for i := range got {
		pos := off + int64(i)
		differs := got[i] != want[i] && (node || !inside(written, pos))
		if differs && start >= 0 && inside(written, pos) != inside(written, off+int64(start)) {
			flush(i)
		}
		switch {
		case differs && start < 0:
			start = i
		case !differs:
			flush(i)
		}
	}
	flush(len(got))
}

// chunkSum is the hex SHA-256 of a chunk; an all-zero one (most of a
// sparse image) is known without hashing it.
func chunkSum(b []byte) string {
	if int64(len(b)) == ChunkSize && sparse.IsZero(b) {
		return zeroChunkHex
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func inside(written []Range, pos int64) bool {
	for _, w := range written {
		if pos >= w.Start && pos < w.End {
			return true
		}
	}
	return false
}

// add records [start, end), split at partition boundaries, merged with
// the previous diff when adjacent.
func (res *Result) add(base *Base, start, end int64, pibake, exact bool) {
	for start < end {
		cut := end
		for _, p := range base.Partitions {
			for _, edge := range []int64{p.Start, p.Start + p.Size} {
				if edge > start && edge < cut {
					cut = edge
				}
			}
		}
		d := Diff{Start: start, End: cut, Where: base.partitionOf(start), Pibake: pibake, Exact: exact}
		if k := len(res.Diffs); k > 0 {
			last := &res.Diffs[k-1]
			if last.End == d.Start && last.Where == d.Where && last.Pibake == d.Pibake && last.Exact == d.Exact {
				last.End = d.End
				start = cut
				continue
			}
		}
		res.Diffs = append(res.Diffs, d)
		start = cut
	}
}
