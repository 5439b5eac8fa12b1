// Package sparse finds the data in sparse files and copies it keeping the
// holes. Raspberry Pi OS images are mostly empty: copying only their data
// is what makes a node image cost seconds, not minutes.
package sparse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Whence values for lseek that find data and holes (Linux, macOS, FreeBSD;
// elsewhere the seek fails and the whole file counts as data).
const (
	seekData = 3
	seekHole = 4
)

// NextExtent returns the next [data, hole) extent at or after pos, capped
// at end; data == end when only a hole is left.
func NextExtent(f *os.File, pos, end int64) (int64, int64) {
	data, err := f.Seek(pos, seekData)
	if err != nil {
		if errors.Is(err, syscall.ENXIO) {
			return end, end
		}
		return pos, end
	}
	hole, err := f.Seek(data, seekHole)
	if err != nil || hole > end {
		hole = end
	}
	return min(data, end), hole
}

// Extents lists the data extents of [off, off+n) of f.
func Extents(f *os.File, off, n int64) [][2]int64 {
	var out [][2]int64
	end := off + n
	for pos := off; pos < end; {
		data, hole := NextExtent(f, pos, end)
		if data >= end {
			break
		}
		out = append(out, [2]int64{data, hole})
		pos = hole
	}
	return out
}

// CopyAt copies n bytes at off of in to off-shift of out, in chunks of
// len(buf), leaving all-zero chunks unwritten (holes in a fresh file).
func CopyAt(out io.WriterAt, in io.ReaderAt, off, n, shift int64, buf []byte) error {
	for n > 0 {
		k := min(n, int64(len(buf)))
		// ReadAt returns fewer bytes only with an error; io.EOF then means
		// the source ended early, which must not pass as zeros.
		if got, err := in.ReadAt(buf[:k], off); int64(got) < k {
			if err == nil || errors.Is(err, io.EOF) {
				err = fmt.Errorf("source ends at byte %d, before %d: %w", off+int64(got), off+k, io.ErrUnexpectedEOF)
			}
			return err
		}
		if !IsZero(buf[:k]) {
			if _, err := out.WriteAt(buf[:k], off-shift); err != nil {
				return err
			}
		}
		off += k
		n -= k
	}
	return nil
}

var zeroPage = make([]byte, 64<<10)

// IsZero reports whether b holds only zero bytes.
func IsZero(b []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:k], zeroPage[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}

// CopyFile copies size bytes from offset off of src into a new file dst,
// keeping holes: only data extents are read, and all-zero blocks inside
// them are skipped too.
func CopyFile(dst, src string, off, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, e := range Extents(in, off, size) {
		if err := CopyAt(out, in, e[0], e[1]-e[0], off, buf); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Truncate(size); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
