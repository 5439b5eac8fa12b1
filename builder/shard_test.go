package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/builder/inputs"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/recipes"
)

// TestShardsMergeToOneBuild: pibake init, two shards built in copies of
// it, merged, equal one unsharded build of the same recipe byte for byte;
// a shard without init, shards of two inits, a node in two shards and a
// damaged shard file are refused.
func TestShardsMergeToOneBuild(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	nodes := buildtest.TwoNodes + "node \"edge\" {\n  role  = \"agent\"\n  count = 2\n}\n"
	r := buildtest.LabRecipe(t, s, strings.Replace(nodes, "node \"srv\" {", "node \"srv\" {\n  ssh = true", 1))
	r.Cluster.CA = "generate"
	cache := filepath.Join(t.TempDir(), "cache")
	root := t.TempDir()
	dir := func(name string) string { return filepath.Join(root, name) }
	opt := buildOptions(t, s, cache)

	if _, err := Build(context.Background(), r, withShard(opt, dir("no-init"), fleet.Shard{Index: 1, Count: 2})); !errors.Is(err, fleet.ErrNeedsInit) || !strings.Contains(err.Error(), "pibake init") {
		t.Fatalf("a shard without init: %v", err)
	}

	iopt := opt
	iopt.OutDir = dir("init")
	if err := initDir(r, iopt); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"whole", "s1", "s2"} {
		cp(t, dir("init"), dir(d))
	}
	if _, err := Build(context.Background(), r, withShard(opt, dir("whole"), fleet.Shard{})); err != nil {
		t.Fatal(err)
	}
	for i, d := range []string{"s1", "s2"} {
		res, err := Build(context.Background(), r, withShard(opt, dir(d), fleet.Shard{Index: i + 1, Count: 2}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 2 {
			t.Errorf("shard %d/2 built %d nodes; want 2", i+1, len(res))
		}
		m := outdir.ReadManifest(dir(d))
		if want := fmt.Sprintf("%d/2", i+1); m.Shard != want || strings.Join(m.RecipeNodes, " ") != "srv agent edge-1 edge-2" {
			t.Errorf("shard %s's manifest records shard %q of %q", want, m.Shard, m.RecipeNodes)
		}
	}
	// One shard alone is half the fleet: refused, naming the other
	// shard's nodes; --allow-partial merges it.
	if err := fleet.Merge(context.Background(), dir("half"), []string{dir("s2")}, fleet.MergeOptions{Logf: t.Logf}); !errors.Is(err, fleet.ErrIncomplete) || !strings.Contains(err.Error(), "shard 1/2 (nodes srv, edge-1) is not given") {
		t.Errorf("merge of shard 2/2 alone: %v", err)
	}
	if err := fleet.Merge(context.Background(), dir("half"), []string{dir("s2")}, fleet.MergeOptions{Logf: t.Logf, AllowPartial: true}); err != nil {
		t.Errorf("merge --allow-partial of shard 2/2 alone: %v", err)
	} else if m := buildtest.CheckInvariant(t, dir("half")); len(m.Nodes) != 2 || m.Shard != "" {
		t.Errorf("merge --allow-partial of shard 2/2 alone: %d nodes, shard %q", len(m.Nodes), m.Shard)
	}
	if err := fleet.Merge(context.Background(), dir("merged"), []string{dir("s1"), dir("s2")}, fleet.MergeOptions{Logf: t.Logf}); err != nil {
		t.Fatal(err)
	}
	whole, merged := snapshot(t, dir("whole")), snapshot(t, dir("merged"))
	delete(whole, outdir.OSListFile)
	delete(merged, outdir.OSListFile)
	if !mapsEqual(whole, merged) {
		t.Errorf("merged shards differ from the unsharded build: %v", changed(whole, merged))
	}
	a, _ := os.ReadFile(filepath.Join(dir("whole"), outdir.OSListFile))
	b, _ := os.ReadFile(filepath.Join(dir("merged"), outdir.OSListFile))
	if !bytes.Equal(bytes.ReplaceAll(a, []byte(dir("whole")), []byte("DIR")), bytes.ReplaceAll(b, []byte(dir("merged")), []byte("DIR"))) {
		t.Errorf("os_list.json differs beyond its directory:\n%s\n%s", a, b)
	}
	cmd := exec.Command("sha256sum", "-c", "SHA256SUMS")
	cmd.Dir = dir("merged")
	if out, err := cmd.CombinedOutput(); err != nil || strings.Count(string(out), ": OK") != 14 { // 4 images, block maps and SBOMs, delta.json, provenance.json
		t.Errorf("sha256sum -c in the merged directory: %v\n%s", err, out)
	}

	// Refusals.
	iopt.OutDir = dir("init2")
	if err := initDir(r, iopt); err != nil {
		t.Fatal(err)
	}
	cp(t, dir("init2"), dir("other"))
	if _, err := Build(context.Background(), r, withShard(opt, dir("other"), fleet.Shard{Index: 2, Count: 2})); err != nil {
		t.Fatal(err)
	}
	// A rotation in one shard only would be lost in the merge: refused,
	// and made in the directory handed to the shards instead.
	if _, err := Build(context.Background(), r, withShard(withRotation(opt, "srv"), dir("s1"), fleet.Shard{Index: 1, Count: 2})); !errors.Is(err, fleet.ErrNeedsInit) || !strings.Contains(err.Error(), "pibake init") {
		t.Errorf("--rotate-node-password in a shard: %v", err)
	}
	iopt.OutDir, iopt.RotateNodePassword = dir("init3"), []string{"srv"}
	if err := initDir(r, iopt); err != nil {
		t.Fatal(err)
	}
	if gens, err := os.ReadFile(filepath.Join(dir("init3"), ".pibake", "node-passwords.json")); err != nil || !bytes.Contains(gens, []byte(`"srv": 1`)) {
		t.Errorf("init --rotate-node-password srv: %s %v", gens, err)
	}
	// Every shard's secrets are compared, not only the first one's.
	cp(t, dir("s2"), dir("s2-rotated"))
	if err := os.WriteFile(filepath.Join(dir("s2-rotated"), ".pibake/node-passwords.json"), []byte("{\"edge-1\": 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cp(t, dir("s1"), dir("s1-rotated"))
	if err := os.WriteFile(filepath.Join(dir("s1-rotated"), ".pibake/node-passwords.json"), []byte("{\"srv\": 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		shards []string
		want   string
	}{
		{"other node passwords in each shard", []string{dir("s1-rotated"), dir("s2-rotated")}, "node-passwords.json differs from"},
		{"two inits", []string{dir("s1"), dir("other")}, "another cluster token"},
		{"node passwords only in the second shard", []string{dir("s1"), dir("s2-rotated")}, "holds .pibake/node-passwords.json and"},
		{"a shard twice", []string{dir("s1"), dir("s1")}, "are both shard 1/2"},
		{"not a pibake directory", []string{t.TempDir()}, "no pibake manifest.json"},
	} {
		if err := fleet.Merge(context.Background(), filepath.Join(t.TempDir(), "m"), tc.shards, fleet.MergeOptions{Logf: t.Logf}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("merge of %s: %v; want %q", tc.name, err, tc.want)
		}
	}
	img := filepath.Join(dir("s2"), "edge-2.img")
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("damage"), 1<<20)
	f.Close()
	if err := fleet.Merge(context.Background(), filepath.Join(t.TempDir(), "m"), []string{dir("s1"), dir("s2")}, fleet.MergeOptions{Logf: t.Logf}); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("merge of a damaged shard: %v", err)
	}
}

func withRotation(opt Options, hosts ...string) Options {
	opt.RotateNodePassword = hosts
	return opt
}

func withShard(opt Options, dir string, sh fleet.Shard) Options {
	opt.OutDir, opt.Shard = dir, sh
	return opt
}

func cp(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// initDir runs pibake init with a build's options.
func initDir(r *recipes.Recipe, opt Options) error {
	return fleet.Init(context.Background(), r, fleet.InitOptions{Options: inputs.Options{
		OutDir: opt.OutDir, Version: opt.Version, Logf: opt.Logf, RotateNodePassword: opt.RotateNodePassword, Base: opt.Base,
	}, Wait: opt.Wait})
}
