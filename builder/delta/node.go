package delta

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/pibake/pibake/internal/sparse"
)

// ForNode records how the node image at nodePath differs from the base
// image at basePath in their first span bytes (the part of the image a
// build edits; past it the node is a copy of the base, which verify checks
// against the base's chunks). Only data extents are compared: where both
// files have holes they are equal.
func ForNode(ctx context.Context, base *Base, basePath, nodePath string, span int64) (*Node, error) {
	bf, err := os.Open(basePath)
	if err != nil {
		return nil, err
	}
	defer bf.Close()
	nf, err := os.Open(nodePath)
	if err != nil {
		return nil, err
	}
	defer nf.Close()
	fi, err := nf.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() != base.Size {
		return nil, fmt.Errorf("node image %s is %d bytes, its base %d", nodePath, fi.Size(), base.Size)
	}
	span = min(span, base.Size)
	n := &Node{Size: fi.Size(), Written: []Range{}, Masked: []Chunk{}}
	for _, e := range union(sparse.Extents(bf, 0, span), sparse.Extents(nf, 0, span)) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := diffBlocks(bf, nf, e[0], e[1], &n.Written); err != nil {
			return nil, fmt.Errorf("compare %s with its base: %w", nodePath, err)
		}
	}
	for _, k := range touched(n.Written, base.ChunkSize) {
		sum, err := maskedSum(bf, base, k, n.Written)
		if err != nil {
			return nil, err
		}
		n.Masked = append(n.Masked, Chunk{Index: k, SHA256: sum})
	}
	return n, nil
}

// union merges two sorted extent lists, widened to whole blocks.
func union(a, b [][2]int64) [][2]int64 {
	all := append(append([][2]int64{}, a...), b...)
	for i := range all {
		all[i][0] = all[i][0] / BlockSize * BlockSize
		all[i][1] = (all[i][1] + BlockSize - 1) / BlockSize * BlockSize
	}
	sortRanges(all)
	var out [][2]int64
	for _, e := range all {
		if k := len(out); k > 0 && e[0] <= out[k-1][1] {
			out[k-1][1] = max(out[k-1][1], e[1])
			continue
		}
		out = append(out, e)
	}
	return out
}

func sortRanges(r [][2]int64) {
	sort.Slice(r, func(i, j int) bool { return r[i][0] < r[j][0] })
}

// diffBlocks appends to out the blocks of [from, to) that differ.
func diffBlocks(a, b io.ReaderAt, from, to int64, out *[]Range) error {
	const step = 1 << 20
	ba, bb := make([]byte, step), make([]byte, step)
	for off := from; off < to; off += step {
		n := int(min(step, to-off))
		if err := readFull(a, ba[:n], off); err != nil {
			return err
		}
		if err := readFull(b, bb[:n], off); err != nil {
			return err
		}
		for i := 0; i < n; i += BlockSize {
			j := min(i+BlockSize, n)
			if !bytes.Equal(ba[i:j], bb[i:j]) {
				addRange(out, off+int64(i), off+int64(j))
			}
		}
	}
	return nil
}

// readFull reads len(p) bytes at off; bytes past the end read as zeros.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		return nil
	}
	return err
}

func addRange(out *[]Range, start, end int64) {
	if k := len(*out); k > 0 && (*out)[k-1].End == start {
		(*out)[k-1].End = end
		return
	}
	*out = append(*out, Range{Start: start, End: end})
}

// touched lists the chunks the ranges touch, ascending.
func touched(rs []Range, chunk int64) []int {
	var ks []int
	for _, r := range rs {
		for k := int(r.Start / chunk); int64(k)*chunk < r.End; k++ {
			if len(ks) == 0 || ks[len(ks)-1] < k {
				ks = append(ks, k)
			}
		}
	}
	return ks
}

// maskedSum is the SHA-256 of chunk k of r with the written bytes zeroed.
func maskedSum(r io.ReaderAt, b *Base, k int, written []Range) (string, error) {
	off := int64(k) * b.ChunkSize
	buf := make([]byte, min(b.ChunkSize, b.Size-off))
	if err := readFull(r, buf, off); err != nil {
		return "", fmt.Errorf("read chunk %d: %w", k, err)
	}
	mask(buf, off, written)
	return chunkSum(buf), nil
}

// mask zeroes the written bytes of buf, which holds the bytes at off.
func mask(buf []byte, off int64, written []Range) {
	end := off + int64(len(buf))
	for _, w := range written {
		if w.End <= off || w.Start >= end {
			continue
		}
		clear(buf[max(w.Start, off)-off : min(w.End, end)-off])
	}
}
