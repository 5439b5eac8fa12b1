package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/golden"
)

// TestMergeRefusesPartialFleet: pibake merge refuses, naming what is
// missing, unless the shards hold every node of the recipe once: a shard
// not given, one given twice, one that built nothing (a bare pibake init
// copy), one whose build failed for a node, one of another recipe, one of
// another split. --allow-partial merges what is there with a warning; -q
// keeps the warning. The shards are manifests written here: merge refuses
// before it reads a node's files (TestShardsMergeToOneBuild in builder
// merges real shards).
func TestMergeRefusesPartialFleet(t *testing.T) {
	root := t.TempDir()
	recipe := []string{"srv", "agent-1", "agent-2", "agent-3"}
	shard := func(name, sh string, hosts ...string) string {
		m := outdir.Manifest{PibakeVersion: "test", Cluster: "lab", RecipeHash: "r1", Token: outdir.TokenFromRecipe,
			RecipeNodes: recipe, Shard: sh, Nodes: []outdir.Node{}}
		if name == "foreign" {
			m.RecipeHash = "r2"
		}
		if sh != "" || len(hosts) > 0 {
			m.Base.SHA256 = "b1"
		}
		for _, h := range hosts {
			m.Nodes = append(m.Nodes, outdir.Node{Hostname: h, State: outdir.StateCurrent})
		}
		if name == "s2-outdated" {
			m.Nodes[1].State = outdir.StateOutdated
		}
		dir := filepath.Join(root, name)
		b, err := json.Marshal(m)
		if err == nil {
			err = os.MkdirAll(dir, 0o755)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
		return dir
	}
	s1 := shard("s1", "1/2", "srv", "agent-2")
	s2 := shard("s2", "2/2", "agent-1", "agent-3")
	s2failed := shard("s2-failed", "2/2", "agent-1")
	s2outdated := shard("s2-outdated", "2/2", "agent-1", "agent-3")
	s1of3 := shard("s1of3", "1/3", "srv", "agent-3")
	initCopy := shard("init-copy", "")
	foreign := shard("foreign", "2/2", "agent-1", "agent-3")
	nothing := shard("nothing", "1/2")
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"merge_missing_shard", []string{s1}, exitFailure},
		{"merge_duplicated_shard", []string{s1, s2, s1}, exitFailure},
		{"merge_empty_shard", []string{s1, initCopy}, exitFailure},
		{"merge_failed_node", []string{s1, s2failed}, exitFailure},
		{"merge_outdated_node", []string{s1, s2outdated}, exitFailure},
		{"merge_foreign_shard", []string{s1, foreign}, exitFailure},
		{"merge_other_split", []string{s1, s1of3}, exitFailure},
		{"merge_allow_partial_quiet", []string{"-q", "--allow-partial", nothing}, exitOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "merged")
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"merge", "--out", out}, tc.args...), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d; want %d\n%s", code, tc.code, stderr.String())
			}
			if _, err := os.Stat(filepath.Join(out, "manifest.json")); (err == nil) != (code == exitOK) {
				t.Errorf("exit %d, and the merged manifest.json: %v", code, err)
			}
			golden.Compare(t, filepath.Join("testdata", "cli", tc.name+".stderr"),
				[]byte(strings.NewReplacer(root, "TMP", out, "OUT").Replace(stderr.String())))
		})
	}
}

// TestInitQuiet: pibake init takes -q as build does, and prints only the
// directory it made (merge's -q is in TestMergeRefusesPartialFleet).
func TestInitQuiet(t *testing.T) {
	home, _ := filepath.Abs("../../recipes/testdata/home") // the example's ssh_public_keys()
	t.Setenv("HOME", home)
	out := filepath.Join(t.TempDir(), "init")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"init", "../../recipes/examples/lab.hcl", "--out", out, "-q"}, &stdout, &stderr)
	if code != exitOK || stdout.String() != out+"\n" || stderr.Len() != 0 {
		t.Errorf("pibake init -q: exit %d, stdout %q, stderr:\n%s", code, stdout.String(), stderr.String())
	}
}
