// Package atomicfile writes files so that they appear under their final
// name only when complete: a crash or an interrupt leaves either the old
// file or the whole new one, never half of it.
package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// WriteFile writes data to a temporary file beside path, syncs it, gives it
// mode and renames it to path. The directory must exist.
func WriteFile(path string, data []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := writeSyncClose(f, data); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// WriteSynced writes data to path under that very name and syncs it,
// without the rename: for a part that a caller renames into place itself
// later, with others.
func WriteSynced(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	return writeSyncClose(f, data)
}

// writeSyncClose writes data to f, syncs it and closes it; f is closed
// whatever fails.
func writeSyncClose(f *os.File, data []byte) error {
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TempPattern matches the temporary names WriteFile uses, for sweeping
// what a killed process left behind.
const TempPattern = ".*.tmp-*"

// SyncDir flushes a directory, so that a rename into it survives a power
// cut. Windows cannot open a directory for that, and needs no such step.
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// Sync flushes a file written earlier to stable storage, before it is
// renamed to its final name.
func Sync(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
