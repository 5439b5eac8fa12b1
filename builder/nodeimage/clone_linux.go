//go:build linux

package nodeimage

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// reflink makes dst share src's blocks (btrfs, XFS, bcachefs): a 3 GB clone
// in milliseconds, written blocks copied on write.
func reflink(dst, src *os.File) error {
	return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
}

// copyRange copies n bytes at off inside the kernel (copy_file_range).
func copyRange(dst, src *os.File, off, n int64) error {
	return copyRangeTo(dst, off, src, off, n)
}

// copyRangeTo copies n bytes from src at srcOff to dst at dstOff inside
// the kernel (copy_file_range), leaving both files' offsets alone.
func copyRangeTo(dst *os.File, dstOff int64, src *os.File, srcOff, n int64) error {
	for n > 0 {
		roff, woff := srcOff, dstOff
		k, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(min(n, 1<<30)), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				return errNoCopyRange
			}
			return err
		}
		if k == 0 {
			return errors.New("copy_file_range made no progress")
		}
		srcOff += int64(k)
		dstOff += int64(k)
		n -= int64(k)
	}
	return nil
}

// startWriteback asks the kernel to start writing [off, off+n) to disk
// without waiting, so copying and writing overlap.
func startWriteback(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
