package inputs

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/recipes"
)

// TestRotationNotRecordedWhenRefused: a build refused for its CA (here a
// CA gone from a directory whose images pin it) records no
// --rotate-node-password: nothing was built with the new password.
func TestRotationNotRecordedWhenRefused(t *testing.T) {
	r := &recipes.Recipe{
		Cluster: recipes.Cluster{Name: "lab", Token: "ha-server-token-0123456789abcdef0123", CA: recipes.CAGenerate, APIServer: "https://10.0.0.1:6443"},
		Nodes:   []recipes.Node{{Hostname: "srv", Role: "server"}},
	}
	dir := t.TempDir()
	m, _ := json.Marshal(outdir.Manifest{Cluster: "lab", Token: "recipe", CAHash: strings.Repeat("1", 64), Nodes: []outdir.Node{{Hostname: "srv"}}})
	os.WriteFile(filepath.Join(dir, "manifest.json"), m, 0o644)
	d, err := outdir.Open(context.Background(), dir, outdir.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := Prepare(r, Options{OutDir: dir, RotateNodePassword: []string{"srv"}, Logf: t.Logf}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SettleIdentity(d); !errors.Is(err, outdir.ErrNewCluster) {
		t.Fatalf("SettleIdentity: %v; want outdir.ErrNewCluster", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".pibake", "node-passwords.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused build recorded the rotation: %v", err)
	}
}
