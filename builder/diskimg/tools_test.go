package diskimg

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

// tool finds a checking tool (also in sbin). A missing tool fails the test
// under CI=true or PIBAKE_REQUIRE_TOOLS=1, and skips it elsewhere with what
// to install.
func tool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found; run `make deps`", name)
	if os.Getenv("CI") == "true" || os.Getenv("PIBAKE_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// runTool runs a checking tool and returns its combined output.
func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(tool(t, name), args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// extract copies one partition into its own (sparse) file, for tools that
// take no offset (fsck.fat).
func extract(t *testing.T, img string, p Partition) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), fmt.Sprintf("part%d", p.Index))
	if err := testimage.CopyRangeSparse(dst, img, p.Offset(), p.Size()); err != nil {
		t.Fatal(err)
	}
	return dst
}

// fsckFAT runs fsck.fat -n on the boot partition; it must report nothing.
func fsckFAT(t *testing.T, img string, p Partition) {
	t.Helper()
	out, err := runTool(t, "fsck.fat", "-n", extract(t, img, p))
	// A clean run prints the version and one summary line, nothing else.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 2 || !strings.HasPrefix(lines[0], "fsck.fat ") || !strings.Contains(lines[1], " files, ") {
		t.Errorf("fsck.fat -n on %s partition %d: %v\n%s", filepath.Base(img), p.Index, err, out)
	}
}

// e2fsckRoot runs e2fsck -fn on the root partition in place.
func e2fsckRoot(t *testing.T, img string, p Partition) {
	t.Helper()
	out, err := runTool(t, "e2fsck", "-fn", fmt.Sprintf("%s?offset=%d", img, p.Offset()))
	if err != nil {
		t.Errorf("e2fsck -fn on %s: %v\n%s", filepath.Base(img), err, out)
	}
}

// mtype reads a file from the boot partition with mtools.
func mtype(t *testing.T, img string, p Partition, name string) string {
	t.Helper()
	out, err := runTool(t, "mtype", "-i", fmt.Sprintf("%s@@%d", img, p.Offset()), "::"+name)
	if err != nil {
		t.Fatalf("mtype ::%s: %v\n%s", name, err, out)
	}
	return out
}
