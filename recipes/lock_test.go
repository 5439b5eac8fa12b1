package recipes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
)

// TestLockRoundTrip: what Bytes writes, LoadLock reads back; a damaged
// lock is an error naming the file, a missing one is no lock.
func TestLockRoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := &Lock{Path: filepath.Join(dir, "lab.hcl.lock"),
		Image: LockImage{Source: DefaultImageSource, URL: "https://example.org/a.img.xz", SHA256: strings.Repeat("ab", 32), ExtractSHA256: strings.Repeat("cd", 32), ReleaseDate: "2025-11-24"},
		K3s:   &LockK3s{Channel: "stable", Version: "v1.33.5+k3s1"}}
	os.WriteFile(want.Path, want.Bytes("lab.hcl"), 0o644)
	got, diags := LoadLock(hclparse.NewParser(), want.Path)
	if diags.HasErrors() || got == nil || got.Image != want.Image || *got.K3s != *want.K3s {
		t.Fatalf("LoadLock = %+v, %v; want %+v", got, diags, want)
	}
	if l, diags := LoadLock(hclparse.NewParser(), filepath.Join(dir, "none.lock")); l != nil || diags != nil {
		t.Errorf("a missing lock: %v, %v", l, diags)
	}
	bad := filepath.Join(dir, "bad.lock")
	os.WriteFile(bad, []byte(strings.Replace(string(want.Bytes("lab.hcl")), strings.Repeat("ab", 32), "abc", 1)), 0o644)
	if _, diags := LoadLock(hclparse.NewParser(), bad); !diags.HasErrors() || !strings.Contains(diags.Error(), "bad.lock") {
		t.Errorf("a lock with a bad sha256: %v", diags)
	}
	// A recipe directory keeps its lock inside, under a name no recipe
	// file has.
	if p := LockPath(&Recipe{Path: dir}); p != filepath.Join(dir, "pibake.lock") {
		t.Errorf("LockPath(dir) = %s", p)
	}
}
