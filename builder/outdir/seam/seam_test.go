package seam

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestWriteAtomic: the file appears whole under its name with the mode
// asked for whatever the umask (a secret stays 0600, a list 0644), no
// temporary name is left, and removing or making twice is no error.
func TestWriteAtomic(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	for _, perm := range []os.FileMode{0o600, 0o644} {
		p := filepath.Join(dir, "f")
		if err := WriteAtomic(OS{}, p, []byte("data"), perm); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != perm {
			t.Errorf("mode %v (%v); want %v", fi.Mode().Perm(), err, perm)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "f")); string(b) != "data" {
		t.Errorf("content %q", b)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(left) != 0 {
		t.Errorf("left %v", left)
	}
	for range 2 {
		if err := RemoveIfThere(OS{}, filepath.Join(dir, "f")); err != nil {
			t.Error(err)
		}
		if err := MkdirIfMissing(OS{}, filepath.Join(dir, "d"), 0o700); err != nil {
			t.Error(err)
		}
	}
}
