package nodeimage

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/pibake/pibake/internal/sparse"
)

var errNoCopyRange = errors.New("copy_file_range not available")

// Method names how an image was cloned, for the log.
type Method string

// Clone is a copy of a base image being made, in ranges, so that a
// node's boot partition can be edited while the rest is still copying.
type Clone struct {
	in, out *os.File
	dst     string
	size    int64
	method  Method
	buf     []byte
}

// startClone makes out (a new, empty file the caller created: mode 0600,
// images hold the cluster token) a clone of src, as large. Where the
// file system shares blocks it is a reflink and complete at once; else
// copyRange fills it, range by range. out is the clone's from then on.
func startClone(out *os.File, src string) (*Clone, error) { return openClone(out, src, true) }

// openClone is startClone, trying a reflink only when asked (tests take
// the copy paths on any file system).
func openClone(out *os.File, src string, tryReflink bool) (*Clone, error) {
	in, err := os.Open(src)
	if err != nil {
		out.Close()
		return nil, err
	}
	fi, err := in.Stat()
	if err != nil {
		in.Close()
		out.Close()
		return nil, err
	}
	c := &Clone{in: in, out: out, dst: out.Name(), size: fi.Size()}
	if tryReflink && reflink(out, in) == nil {
		c.method = "reflink"
		return c, nil
	}
	c.method = "copy_file_range"
	if err := out.Truncate(c.size); err != nil {
		c.abort()
		return nil, err
	}
	return c, nil
}

// copyRange copies [from, to) of the base over its data extents only,
// fastest first: copy_file_range, else a read/write copy that skips
// all-zero blocks. Holes stay holes. Write-back starts as it goes, so the
// final sync has little left to wait for.
func (c *Clone) copyRange(ctx context.Context, from, to int64) error {
	if c.method == "reflink" {
		return nil
	}
	to = min(to, c.size)
	for _, e := range sparse.Extents(c.in, from, to-from) {
		for p := e[0]; p < e[1]; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(e[1]-p, 64<<20)
			if c.method == "copy_file_range" {
				err := copyRange(c.out, c.in, p, n)
				if errors.Is(err, errNoCopyRange) {
					c.method = "read/write"
				} else if err != nil {
					return err
				}
			}
			if c.method == "read/write" {
				if c.buf == nil {
					c.buf = make([]byte, 1<<20)
				}
				if err := sparse.CopyAt(c.out, c.in, p, n, 0, c.buf); err != nil {
					return err
				}
			}
			startWriteback(c.out, p, n)
			p += n
		}
	}
	return nil
}

// finish syncs and closes the copy.
func (c *Clone) finish() error {
	c.in.Close()
	if err := c.out.Sync(); err != nil {
		c.out.Close()
		return fmt.Errorf("sync %s: %w", c.dst, err)
	}
	return c.out.Close()
}

// abort closes the copy; its file is the caller's to remove.
func (c *Clone) abort() {
	c.in.Close()
	c.out.Close()
}
