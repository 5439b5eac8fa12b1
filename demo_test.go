package pibake_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

// TestMakeDemoOffline runs `make demo` as the README tells a new user to,
// with a PATH that holds only go (no sfdisk, mkfs, mtools, apt-get, git,
// not even mkdir: nothing but Go may be needed) and GOPROXY=off (no
// network; the module cache is the one this test runs with, as after a
// first build). Run again with DEMO_FLAGS=--force, which regenerates the
// base image and rebuilds every node, it writes the same SHA256SUMS: the
// demo is reproducible.
func TestMakeDemoOffline(t *testing.T) {
	if testing.Short() {
		t.Skip("builds pibake and the demo's three images twice")
	}
	mk := testimage.Tool(t, "make")
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + filepath.Dir(goBin), "HOME=" + t.TempDir(), "GOPROXY=off", "GOTOOLCHAIN=local"}
	for _, v := range []string{"GOCACHE", "GOMODCACHE"} {
		out, err := exec.Command(goBin, "env", v).Output()
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, v+"="+strings.TrimSpace(string(out)))
	}
	demo := filepath.Join(t.TempDir(), "demo")
	var sums []string
	for _, flags := range []string{"", "--force"} {
		cmd := exec.Command(mk, "demo", "DEMO="+demo, "DEMO_FLAGS="+flags)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make demo DEMO_FLAGS=%s: %v\n%s", flags, err, out)
		}
		if n := strings.Count(string(out), " built\n"); n != 3 {
			t.Errorf("make demo DEMO_FLAGS=%s built %d images; want 3\n%s", flags, n, out)
		}
		b, err := os.ReadFile(filepath.Join(demo, "SHA256SUMS"))
		if err != nil || strings.Count(string(b), ".img\n") != 3 {
			t.Fatalf("SHA256SUMS after make demo: %v\n%s", err, b)
		}
		sums = append(sums, string(b))
	}
	if sums[0] != sums[1] {
		t.Errorf("two demo runs wrote different SHA256SUMS:\n%s\n%s", sums[0], sums[1])
	}
}
