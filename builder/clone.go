package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/pibake/pibake/internal/sparse"
)

var errNoCopyRange = errors.New("copy_file_range not available")

// cloneMethod names how an image was cloned, for the log.
type cloneMethod string

// clone copies src to a new file dst (mode 0600: images hold the cluster
// token), fastest first: a reflink where the file system shares blocks,
// else copy_file_range over the data extents only, else a read/write copy
// that skips all-zero blocks. Holes stay holes in every case.
func clone(ctx context.Context, dst, src string) (cloneMethod, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	method, err := cloneInto(ctx, out, in, fi.Size())
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return "", err
	}
	return method, nil
}

func cloneInto(ctx context.Context, out, in *os.File, size int64) (cloneMethod, error) {
	if reflink(out, in) == nil {
		return "reflink", nil
	}
	if err := out.Truncate(size); err != nil {
		return "", err
	}
	method := cloneMethod("copy_file_range")
	buf := make([]byte, 1<<20)
	for pos := int64(0); pos < size; {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		data, hole := sparse.NextExtent(in, pos, size)
		if data >= size {
			break
		}
		for p := data; p < hole; {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			n := min(hole-p, 64<<20)
			if method == "copy_file_range" {
				err := copyRange(out, in, p, n)
				if err == nil {
					p += n
					continue
				}
				if !errors.Is(err, errNoCopyRange) {
					return "", err
				}
				method = "read/write"
			}
			if err := sparse.CopyAt(out, in, p, n, 0, buf); err != nil {
				return "", err
			}
			p += n
		}
		pos = hole
	}
	return method, nil
}

// describeWriteError adds what to do when the disk is full.
func describeWriteError(dir string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: the disk holding %s is full; free space or choose another --out", err, dir)
	}
	return err
}
