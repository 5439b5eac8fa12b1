// Package files answers the questions about a file that pibake asks in
// many places, each answered once: is it there, and what is its SHA-256,
// read past its holes.
package files

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/pibake/pibake/internal/sparse"
)

// Exists reports whether p names something there (a file, directory or
// device), following symlinks.
func Exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// SHA256 hashes a file and returns the sum in hex and its size, stopping
// when ctx is cancelled.
func SHA256(ctx context.Context, p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	if err := HashRange(ctx, h, f, 0, fi.Size()); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), fi.Size(), nil
}

// zeroMiB is what a hole hashes as, read and never written.
var zeroMiB [1 << 20]byte

// readBufs hold HashRange's read buffers: a build hashes a node's image
// range by range, and a fresh MiB each time was a tenth of a crash-point
// test's CPU (allocating and clearing it).
var readBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// HashRange feeds [from, to) of f to h. Holes are hashed from a zero
// buffer instead of being read: an image is mostly holes. A file shorter
// than to is an error, not a silently shorter hash.
func HashRange(ctx context.Context, h hash.Hash, f *os.File, from, to int64) error {
	bufp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bufp)
	buf := *bufp
	hashZeros := func(n int64) {
		for n > 0 {
			k := min(n, int64(len(zeroMiB)))
			h.Write(zeroMiB[:k])
			n -= k
		}
	}
	pos := from
	for _, e := range sparse.Extents(f, from, to-from) {
		hashZeros(e[0] - pos)
		for p := e[0]; p < e[1]; {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := min(e[1]-p, int64(len(buf)))
			if _, err := f.ReadAt(buf[:k], p); err != nil {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("%s ends at byte %d, before %d: %w", f.Name(), p, to, io.ErrUnexpectedEOF)
				}
				return err
			}
			h.Write(buf[:k])
			p += k
		}
		pos = e[1]
	}
	if fi, err := f.Stat(); err == nil && fi.Size() < to {
		return fmt.Errorf("%s is %d bytes, shorter than %d: %w", f.Name(), fi.Size(), to, io.ErrUnexpectedEOF)
	}
	hashZeros(to - pos)
	return ctx.Err()
}
