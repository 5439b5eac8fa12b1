package testimage

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The independent checks the tests run on what pibake writes.

// Run runs a checking tool and returns its combined output.
func Run(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(Tool(t, name), args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// FsckFAT runs fsck.fat -n on the FAT file system at [off, off+size) of
// img, which must report nothing: a clean run prints the version and one
// summary line.
func FsckFAT(t testing.TB, img string, off, size int64) {
	t.Helper()
	part := filepath.Join(t.TempDir(), "bootfs")
	if err := CopyRangeSparse(part, img, off, size); err != nil {
		t.Fatal(err)
	}
	out, err := Run(t, "fsck.fat", "-n", part)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 2 || !strings.HasPrefix(lines[0], "fsck.fat ") || !strings.Contains(lines[1], " files, ") {
		t.Errorf("fsck.fat -n on the boot partition of %s: %v\n%s", filepath.Base(img), err, out)
	}
}

// E2fsck runs e2fsck -fn on the ext4 file system at off of img.
func E2fsck(t testing.TB, img string, off int64) {
	t.Helper()
	out, err := Run(t, "e2fsck", "-fn", fmt.Sprintf("%s?offset=%d", img, off))
	if err != nil {
		t.Errorf("e2fsck -fn on %s: %v\n%s", filepath.Base(img), err, out)
	}
}

// Mtype reads a file from the FAT file system at off of img with mtools.
func Mtype(t testing.TB, img string, off int64, name string) string {
	t.Helper()
	out, err := Run(t, "mtype", "-i", fmt.Sprintf("%s@@%d", img, off), "::"+name)
	if err != nil {
		t.Fatalf("mtype ::%s: %v\n%s", name, err, out)
	}
	return out
}

// Mdir lists a directory of the FAT file system at off of img (bare names).
func Mdir(t testing.TB, img string, off int64, dir string) string {
	t.Helper()
	out, err := Run(t, "mdir", "-b", "-i", fmt.Sprintf("%s@@%d", img, off), "::"+dir)
	if err != nil {
		t.Fatalf("mdir ::%s: %v\n%s", dir, err, out)
	}
	return out
}

// Cmp compares the first size-of-img bytes of target with img, with cmp:
// a flashed device is longer than the image it holds.
func Cmp(t testing.TB, target, img string) {
	t.Helper()
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := Run(t, "cmp", "-n", fmt.Sprint(fi.Size()), target, img); err != nil {
		t.Errorf("cmp %s %s: %v\n%s", target, img, err, out)
	}
}
