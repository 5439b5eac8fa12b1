package builder

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func TestClusterToken(t *testing.T) {
	out := t.TempDir()
	tok, err := ClusterToken(out)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(tok) {
		t.Errorf("generated token %d chars, want 64 hex digits", len(tok))
	}
	path := filepath.Join(out, ".pibake", "token")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("token file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf(".pibake directory mode %v, %v; want 0700", di.Mode().Perm(), err)
	}
	again, err := ClusterToken(out)
	if err != nil || again != tok {
		t.Errorf("second ClusterToken returned a different token (%v)", err)
	}
	other, err := ClusterToken(t.TempDir())
	if err != nil || other == tok {
		t.Errorf("a new output directory got the same token (%v)", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf(".pibake holds %d entries; want only the token (no temporary files)", len(entries))
	}

	if err := os.WriteFile(path, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ClusterToken(out); err == nil {
		t.Error("a damaged token file was accepted")
	}
}
