// Package seam is the output directory's one way to change its files:
// every call of an FS is one filesystem step (a write, an fsync, a
// rename, an unlink, a link, a mkdir, a directory sync), so that a test
// can stop a transaction after any step k, as a kill -9 would, and check
// what the next run makes of it (builder's TestCrashPoints).
package seam

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pibake/pibake/internal/atomicfile"
)

// FS is what a step goes through. Reads are not steps and go straight
// to the disk. A part's own bytes (an image being cloned) are written by the
// code that makes it through the *os.File CreatePart returns: until a
// journal names the part, it is garbage the next run sweeps, so those
// writes are not steps; creating the part is.
type FS interface {
	// WriteFile creates (or truncates) name with perm and writes data,
	// without syncing it.
	WriteFile(name string, data []byte, perm fs.FileMode) error
	// Create creates name, which must not exist, for writing.
	Create(name string, perm fs.FileMode) (*os.File, error)
	// Link makes name a hard link to an existing file.
	Link(existing, name string) error
	// Sync flushes a file's data to stable storage.
	Sync(name string) error
	Rename(from, to string) error
	// Remove unlinks a file or an empty directory.
	Remove(name string) error
	// RemoveAll removes a directory and everything in it, as one step.
	RemoveAll(name string) error
	Mkdir(name string, perm fs.FileMode) error
	// SyncDir flushes a directory, so that a rename into it or an unlink
	// from it survives a power cut.
	SyncDir(dir string) error
}

// OS is the FS of the running system.
type OS struct{}

// WriteFile implements FS.
func (OS) WriteFile(name string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	// The mode, whatever the umask: a file holding a secret stays 0600,
	// a checksum list 0644.
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Create implements FS.
func (OS) Create(name string, perm fs.FileMode) (*os.File, error) {
	return os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_RDWR, perm)
}

// Link implements FS.
func (OS) Link(existing, name string) error { return os.Link(existing, name) }

// Sync implements FS (atomicfile.Sync).
func (OS) Sync(name string) error { return atomicfile.Sync(name) }

// Rename implements FS.
func (OS) Rename(from, to string) error { return os.Rename(from, to) }

// Remove implements FS.
func (OS) Remove(name string) error { return os.Remove(name) }

// RemoveAll implements FS.
func (OS) RemoveAll(name string) error { return os.RemoveAll(name) }

// Mkdir implements FS.
func (OS) Mkdir(name string, perm fs.FileMode) error { return os.Mkdir(name, perm) }

// SyncDir implements FS (atomicfile.SyncDir: a no-op on Windows).
func (OS) SyncDir(dir string) error { return atomicfile.SyncDir(dir) }

// WriteAtomic writes data to name so that it appears there only whole:
// a temporary name beside it, synced, renamed, the directory synced. The
// temporary name matches atomicfile.TempPattern, which the output
// directory's sweep removes.
func WriteAtomic(fsys FS, name string, data []byte, perm fs.FileMode) error {
	tmp := filepath.Join(filepath.Dir(name), "."+filepath.Base(name)+".tmp-"+strconv.Itoa(os.Getpid()))
	if err := fsys.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := fsys.Sync(tmp); err != nil {
		return err
	}
	if err := fsys.Rename(tmp, name); err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(name))
}

// RemoveIfThere unlinks name when it is there: a step only then.
func RemoveIfThere(fsys FS, name string) error {
	if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := fsys.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// MkdirIfMissing creates a directory (not its parents) when it is not
// there: a step only then.
func MkdirIfMissing(fsys FS, dir string, perm fs.FileMode) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	if err := fsys.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}
