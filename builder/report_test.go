package builder

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pibake/pibake/recipes"
)

// TestReadWatchTarget: the builds a node may report from are its built
// image's and those of its verified flashes, not a failed flash's; a
// directory without a report key says what to do.
func TestReadWatchTarget(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadWatchTarget(dir); err == nil || !strings.Contains(err.Error(), "build the recipe there first") {
		t.Fatalf("no key: %v", err)
	}
	os.MkdirAll(filepath.Join(dir, ".pibake"), 0o700)
	os.WriteFile(filepath.Join(dir, ReportKeyFile), []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"cluster":"lab","nodes":[
  {"hostname":"srv","state":"current","inputs":"1111111111111111ffff"},
  {"hostname":"gone","state":"orphan","inputs":"2222222222222222ffff"}],
 "flashes":[
  {"node":"srv","build":"3333333333333333","result":"verified"},
  {"node":"srv","build":"4444444444444444","result":"failed"},
  {"node":"edge","build":"5555555555555555","result":"verified"},
  {"node":"edge","build":"5555555555555555","result":"verified"}]}`), 0o644)
	wt, err := ReadWatchTarget(dir)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string][]string{"srv": {"1111111111111111", "3333333333333333"}, "edge": {"5555555555555555"}, "gone": nil} {
		if got := wt.Builds[host]; !slices.Equal(got, want) {
			t.Errorf("builds of %s = %v; want %v", host, got, want)
		}
	}
	os.WriteFile(filepath.Join(dir, ReportKeyFile), []byte("short\n"), 0o600)
	if _, err := ReadWatchTarget(dir); err == nil || !strings.Contains(err.Error(), "not 64 hex digits") {
		t.Errorf("a damaged key: %v", err)
	}
}

// TestReportKeyKeptAndRenewed: the key is made once and kept (same inputs,
// same bytes), not made for a recipe nobody reports in, and made anew for
// a new cluster.
func TestReportKeyKeptAndRenewed(t *testing.T) {
	o := &output{dir: t.TempDir(), logf: t.Logf}
	silent := &recipes.Recipe{Nodes: []recipes.Node{{Hostname: "srv"}}}
	if key, err := o.reportKey(silent, false); err != nil || key != nil {
		t.Fatalf("no report URL: key %x, %v; want none", key, err)
	}
	if _, err := os.Stat(o.path(ReportKeyFile)); err == nil {
		t.Fatal("a report key was made for a recipe without a report URL")
	}
	r := &recipes.Recipe{Nodes: []recipes.Node{{Hostname: "srv", ReportURL: "http://w:8470"}}}
	first, err := o.reportKey(r, false)
	if err != nil || len(first) != 32 {
		t.Fatalf("first key: %x, %v", first, err)
	}
	if fi, err := os.Stat(o.path(ReportKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	again, _ := o.reportKey(r, false)
	renewed, _ := o.reportKey(r, true)
	if !slices.Equal(again, first) || slices.Equal(renewed, first) {
		t.Errorf("kept %v, renewed with --new-cluster %v; want kept and renewed", slices.Equal(again, first), !slices.Equal(renewed, first))
	}
}
