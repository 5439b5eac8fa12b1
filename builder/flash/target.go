package flash

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Target is a block device or a plain file to write an image to, as
// inspected before anything is written.
type Target struct {
	Path string
	// Disk describes a block device; nil for a plain file.
	Disk *Disk
	// Existing is the size of the plain file already at Path, which the
	// write replaces (a backup image, or a mistyped recipe name): 0 for a
	// new or empty file or a device.
	Existing int64
	// sys is where Disk was read from: the device opened for writing is
	// described again from there and must be the same one.
	sys System
}

// Inspect finds out what path is: a whole-disk block device (described
// from s's sysfs and mount table), or a plain file, existing or to be
// created. Anything else is refused.
func (s System) Inspect(path string) (Target, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if abs, _ := filepath.Abs(path); strings.HasPrefix(abs, "/dev/") && !strings.HasPrefix(abs, "/dev/shm/") {
			// Never create a file in /dev: a mistyped device name.
			// /dev/shm is the shared-memory tmpfs, where a file is a
			// file (the tests keep theirs there).
			return Target{}, fmt.Errorf("target %s: no such device", path)
		}
		if _, err := os.Stat(filepath.Dir(path)); err != nil {
			return Target{}, fmt.Errorf("target %s: %w", path, err)
		}
		return Target{Path: path}, nil
	case err != nil:
		return Target{}, fmt.Errorf("target %s: %w", path, err)
	case fi.Mode().IsRegular():
		return Target{Path: path, Existing: fi.Size()}, nil
	case fi.IsDir():
		return Target{}, fmt.Errorf("target %s is a directory; name a block device (/dev/sdX) or an image file", path)
	}
	dev, err := blockDevice(fi)
	if err != nil {
		return Target{}, fmt.Errorf("target %s: %w", path, err)
	}
	d, err := s.Describe(path, dev)
	if err != nil {
		return Target{}, err
	}
	return Target{Path: path, Disk: d, sys: s}, nil
}

// sameDisk checks that the block device opened for writing, dev
// ("major:minor", from the open file), is still the disk inspected, shown
// and confirmed, and still may be written: between the two lie the base
// image's download, the prompt and the wait for the lock, time enough to
// swap a USB stick for another that gets the same /dev name and number.
func (t Target) sameDisk(dev string, size int64) error {
	was := t.Disk
	notIt := func(why string) error {
		return fmt.Errorf("the device at %s is not the one confirmed: %s; nothing written", t.Path, why)
	}
	if dev != was.Dev {
		return notIt(fmt.Sprintf("it is device %s now, not %s", dev, was.Dev))
	}
	s := t.sys
	if s.Root == "" {
		s = Host
	}
	now, err := s.Describe(t.Path, dev)
	if err != nil {
		return notIt(err.Error())
	}
	if now.Model != was.Model || now.Serial != was.Serial || now.Size != was.Size || now.Removable != was.Removable {
		return notIt(fmt.Sprintf("it is %s now, not %s", now.describe(), was.describe()))
	}
	// The same disk, but perhaps mounted since (a desktop automounts a
	// card): the refusals again. Fixed or removable is unchanged, and was
	// allowed when it was checked.
	if err := now.Refusal(size, true); err != nil {
		return fmt.Errorf("%w; nothing written", err)
	}
	return nil
}

// Check says why t must not receive an image of size bytes, or nil.
func (t Target) Check(size int64, allowFixed bool) error {
	if t.Disk == nil {
		return nil
	}
	return t.Disk.Refusal(size, allowFixed)
}

// IsFile reports whether t is a plain file.
func (t Target) IsFile() bool { return t.Disk == nil }

// SameFile reports whether t is the file at p (the image being written,
// which must never be its own target).
func (t Target) SameFile(p string) bool {
	a, err1 := os.Stat(t.Path)
	b, err2 := os.Stat(p)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// openFile opens a plain-file target: truncated and sized to the image,
// so that the unmapped ranges are holes, which read as the zeros the
// image has there. Mode 0600: node images hold the cluster token.
func openFile(path string, size int64) (*writer, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	return &writer{f: f, align: 1, buf: make([]byte, chunkSize)}, nil
}
