package testimage

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

var (
	cacheMu  sync.Mutex
	cacheDir string
	cached   = map[string]string{}
)

// For returns a private copy of a release-shaped image for one test. The
// image is built once per test process and copied (sparse) per test. A
// missing tool fails the test under CI=true or PIBAKE_REQUIRE_TOOLS=1 and
// skips it elsewhere, naming what to install.
func For(t testing.TB, s Spec) string {
	t.Helper()
	for _, tool := range Tools {
		Tool(t, tool) // a missing tool: the one rule, in Tool
	}
	base, err := built(s)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), s.Name+".img")
	if err := CopySparse(dst, base); err != nil {
		t.Fatalf("copy test image: %v", err)
	}
	return dst
}

func built(s Spec) (string, error) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	key := fmt.Sprintf("%+v", s)
	if p, ok := cached[key]; ok {
		return p, nil
	}
	if err := makeCacheDir(); err != nil {
		return "", err
	}
	p := filepath.Join(cacheDir, fmt.Sprintf("%s-%d.img", s.Name, len(cached)))
	if err := Build(p, s); err != nil {
		return "", err
	}
	cached[key] = p
	return p, nil
}

// makeCacheDir makes the process's directory of test images; under
// cacheMu.
func makeCacheDir() error {
	if cacheDir != "" {
		return nil
	}
	// Removed by Cleanup; one per test process.
	d, err := os.MkdirTemp("", "pibake-testimages-")
	if err != nil {
		return err
	}
	cacheDir = d
	return nil
}

// TempPath is a new path for a file in the process's directory of test
// images, which Cleanup removes.
func TempPath(name string) string {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if err := makeCacheDir(); err != nil {
		panic(fmt.Sprintf("test images: %v", err))
	}
	d, err := os.MkdirTemp(cacheDir, "temp-")
	if err != nil {
		panic(fmt.Sprintf("test images: %v", err))
	}
	return filepath.Join(d, name)
}

// Cleanup removes the images built by this process; call it from TestMain.
func Cleanup() {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if cacheDir != "" {
		os.RemoveAll(cacheDir)
	}
}

// Tool finds a checking tool (also in sbin directories). A missing tool
// fails the test under CI=true or PIBAKE_REQUIRE_TOOLS=1, and skips it
// elsewhere, saying how to install it.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p, err := lookPath(name); err == nil {
		return p
	}
	Missing(t, fmt.Sprintf("%s not found; run make deps (it installs the Debian tools the tests check with)", name))
	return ""
}

// Missing is the one rule for a test whose checking tool is not on the
// machine: it fails under CI=true or PIBAKE_REQUIRE_TOOLS=1 (a check must
// never silently not run there), and elsewhere skips, saying what to
// install.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" || os.Getenv("PIBAKE_REQUIRE_TOOLS") == "1" {
		t.Fatal(what)
	}
	t.Skip(what)
}
