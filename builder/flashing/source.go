package flashing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pibake/pibake/builder/flash"
	"github.com/pibake/pibake/builder/nodeimage"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/internal/sparse"
	"github.com/pibake/pibake/recipes"
)

// nodeSource makes node n's image as a flash source: its edited head in a
// sparse part in the output directory (mode 0600, removed by cleanup, and
// by the next run's sweep if killed), the rest read from the base. Its
// ranges are the block map's: the data extents of head and base, widened
// to whole blocks; their sums are the base's cached ones where a range
// lies past the head, else hashed here.
func (f *run) nodeSource(ctx context.Context, d *outdir.Dir, n *recipes.Node) (src *flash.Source, cleanup func(), err error) {
	inputs, err := f.s.Inputs(*n)
	if err != nil {
		return nil, nil, err
	}
	f.builds[n.Hostname] = outdir.BuildID(inputs)
	payload, err := f.s.Payload(n, inputs)
	if err != nil {
		return nil, nil, err
	}
	head, size, part, err := f.head(ctx, d, n.Hostname, payload)
	if err != nil {
		return nil, nil, err
	}
	base := f.s.Base
	tail, err := os.Open(base.Path)
	if err != nil {
		head.Close()
		part.Discard()
		return nil, nil, err
	}
	cleanup = func() {
		head.Close()
		tail.Close()
		part.Discard()
	}
	if src, err = splitSource(ctx, n.Hostname, head, tail, base.EditSpan, size, base.Known); err != nil {
		cleanup()
		return nil, nil, err
	}
	if prev, ok := d.Entry(n.Hostname); ok && prev.Inputs == inputs {
		// Built from the same inputs: the device must read back as that
		// image does.
		src.SHA256 = prev.SHA256
	}
	return src, cleanup, nil
}

// head writes node host's edited head to a part and opens it for reading.
func (f *run) head(ctx context.Context, d *outdir.Dir, host string, payload firstboot.Payload) (*os.File, int64, *outdir.Part, error) {
	part := d.NewPart(host + ".flash")
	if err := part.Discard(); err != nil {
		return nil, 0, nil, err
	}
	out, err := part.Create()
	if err != nil {
		return nil, 0, nil, err
	}
	c, err := nodeimage.Head(ctx, out, f.s.Base.Base, f.s.Edit(payload))
	if err == nil {
		err = c.Close()
	}
	var head *os.File
	if err == nil {
		head, err = os.Open(part.Path())
	}
	if err != nil {
		part.Discard()
		return nil, 0, nil, err
	}
	return head, c.Size(), part, nil
}

// splitReader reads [0, split) from head and the rest from tail.
type splitReader struct {
	head, tail io.ReaderAt
	split      int64
}

func (s splitReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.split {
		return s.tail.ReadAt(p, off)
	}
	if off+int64(len(p)) <= s.split {
		return s.head.ReadAt(p, off)
	}
	k := s.split - off
	n, err := s.head.ReadAt(p[:k], off)
	if err != nil {
		return n, err
	}
	m, err := s.tail.ReadAt(p[k:], s.split)
	return n + m, err
}

// splitSource is the flash source for an image whose [0, split) is head's
// and the rest tail's, of size bytes.
func splitSource(ctx context.Context, name string, head, tail *os.File, split, size int64, known nodeimage.RangeSums) (*flash.Source, error) {
	exts := sparse.Extents(head, 0, split)
	exts = append(exts, sparse.Extents(tail, split, size-split)...)
	r := splitReader{head: head, tail: tail, split: split}
	src := &flash.Source{Name: name, R: r, Size: size}
	buf := make([]byte, 1<<20)
	for _, br := range nodeimage.BlockRanges(exts) {
		from, to := br[0]*nodeimage.BlockSize, min((br[1]+1)*nodeimage.BlockSize, size)
		sum, ok := known[br]
		if !ok || from < split {
			h := sha256.New()
			if err := hashRangeAt(ctx, h, r, from, to, buf); err != nil {
				return nil, fmt.Errorf("hash %s: %w", name, err)
			}
			sum = hex.EncodeToString(h.Sum(nil))
		}
		src.Ranges = append(src.Ranges, flash.Range{Off: from, End: to, SHA256: sum})
	}
	return src, nil
}

// hashRangeAt writes [from, to) of r to w, stopping when ctx is cancelled.
func hashRangeAt(ctx context.Context, w io.Writer, r io.ReaderAt, from, to int64, buf []byte) error {
	for p := from; p < to; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(int64(len(buf)), to-p)
		if n, err := r.ReadAt(buf[:k], p); int64(n) < k {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		w.Write(buf[:k])
		p += k
	}
	return nil
}
