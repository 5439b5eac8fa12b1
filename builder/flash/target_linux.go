package flash

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"unsafe"

	"github.com/pibake/pibake/internal/bytesize"
	"golang.org/x/sys/unix"
)

// blockDevice returns a block device's major:minor.
func blockDevice(fi os.FileInfo) (string, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return "", errors.New("not a block device nor a plain file")
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), nil
}

// openTarget opens t for writing. A block device must be, once open, the
// disk inspected and confirmed (sameDisk); it is opened with O_EXCL,
// which the kernel refuses while any partition of it is mounted or held
// (the last check, after the sysfs ones, against a race), and O_DIRECT:
// every write reaches the device before the next, so an interrupt stops
// within one chunk and leaves no gigabytes of dirty cache to flush, and
// the read-back reads the device, not the page cache.
func openTarget(t Target, size int64) (*writer, error) {
	if t.IsFile() {
		w, err := openFile(t.Path, size)
		if err != nil {
			return nil, err
		}
		w.t = t
		return w, nil
	}
	fd, err := unix.Open(t.Path, unix.O_RDWR|unix.O_EXCL|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("%s is in use: the kernel refused exclusive access (mounted, or held by another program)", t.Path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", t.Path, err)
	}
	f := os.NewFile(uintptr(fd), t.Path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", t.Path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		f.Close()
		return nil, fmt.Errorf("the device at %s is not the one confirmed: it is no block device now; nothing written", t.Path)
	}
	if err := t.sameDisk(fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), size); err != nil {
		f.Close()
		return nil, err
	}
	lbs, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
	if err != nil || lbs <= 0 {
		lbs = 512
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("size of %s: %w", t.Path, err)
	}
	// A device smaller than the image is refused before writing (Check
	// does it from sysfs; this is what the open device says).
	if end < roundUp(size, int64(lbs)) {
		f.Close()
		return nil, fmt.Errorf("%s holds %s, less than the image's %s; use a larger card or disk", t.Path, bytesize.Format(end), bytesize.Format(size))
	}
	buf, err := unix.Mmap(-1, 0, chunkSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("buffer for %s: %w", t.Path, err)
	}
	return &writer{t: t, f: f, direct: true, align: int64(lbs), buf: buf}, nil
}

// dropCache makes the read-back read the disk: a block device is read
// with O_DIRECT already; a file's synced pages are dropped from the page
// cache (on a file system without a disk, tmpfs, they are all there is).
func (w *writer) dropCache() error {
	if w.direct {
		return nil
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	return unix.Fadvise(int(w.f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// freeBuf releases a direct-I/O buffer (page-aligned, from mmap).
func freeBuf(b []byte) {
	unix.Munmap(b[:cap(b)])
}

// zeroOut makes n bytes at off zeros: BLKZEROOUT, which the kernel turns
// into the device's own write-zeroes where it has one (a loop device
// punches holes, an NVMe or SCSI disk may not move a byte) and into
// written zero pages where not. A kernel or driver that refuses the
// ioctl gets zeros written from here.
func (w *writer) zeroOut(off, n int64) error {
	if !w.noZeroOut && !writeZerosOnly {
		r := [2]uint64{uint64(off), uint64(n)}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, w.f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r)))
		if errno == 0 {
			return nil
		}
		if errno != unix.ENOTTY && errno != unix.EOPNOTSUPP && errno != unix.EINVAL {
			return errno
		}
		w.noZeroOut = true
	}
	return w.writeZeros(off, n)
}
