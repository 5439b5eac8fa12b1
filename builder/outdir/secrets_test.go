package outdir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/files"
)

// openTest opens (and locks) an output directory for a test.
func openTest(t *testing.T, dir string) *Dir {
	t.Helper()
	d, err := Open(context.Background(), dir, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func TestClusterToken(t *testing.T) {
	out := t.TempDir()
	o := openTest(t, out)
	tok, source, err := o.Token("", false)
	if err != nil || source != "generated" {
		t.Fatal(source, err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(tok) {
		t.Errorf("generated token %d chars, want 64 hex digits", len(tok))
	}
	path := filepath.Join(out, ".pibake", "token")
	if fi, err := os.Stat(path); err != nil {
		t.Errorf("token file: %v", err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v; want 0600", fi.Mode().Perm())
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil {
		t.Errorf(".pibake directory: %v", err)
	} else if di.Mode().Perm() != 0o700 {
		t.Errorf(".pibake directory mode %v; want 0700", di.Mode().Perm())
	}
	again, _, err := o.Token("", false)
	if err != nil || again != tok {
		t.Errorf("second clusterToken returned a different token (%v)", err)
	}
	other, _, err := openTest(t, t.TempDir()).Token("", false)
	if err != nil || other == tok {
		t.Errorf("a new output directory got the same token (%v)", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	names := []string{}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "lock token" {
		t.Errorf(".pibake holds %v; want only the lock and the token (no temporary files)", names)
	}

	// The recipe's token wins and touches nothing.
	if got, source, err := o.Token("recipe-token-0123456789", false); got != "recipe-token-0123456789" || source != "recipe" || err != nil {
		t.Errorf("Token(recipe token) = %q, %s, %v", got, source, err)
	}

	// A kept token is checked like a recipe's; the error never quotes it.
	for _, bad := range []string{"short", "has white space in it 0123", "K10abcdef0123456789::server:x"} {
		if err := os.WriteFile(path, []byte(bad+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := o.Token("", false)
		if err == nil || strings.Contains(err.Error(), bad) {
			t.Errorf("kept token %q: %v; want refused, without quoting it", bad, err)
		}
	}
}

// TestClusterTokenNeverSilentlyRegenerated: images built with a generated
// token that is then lost or replaced are refused, unless the user starts
// a new cluster on purpose.
func TestClusterTokenNeverSilentlyRegenerated(t *testing.T) {
	o := openTest(t, t.TempDir())
	tok, _, err := o.Token("", false)
	if err != nil {
		t.Fatal(err)
	}
	o.m.Token, o.m.TokenID = "generated", TokenID(tok)
	o.m.Nodes = []Node{{Hostname: "pi", File: "pi.img"}}
	path := o.path(TokenFile)

	os.Remove(path)
	if _, _, err := o.Token("", false); !errors.Is(err, ErrNewCluster) || !strings.Contains(err.Error(), "--new-cluster") {
		t.Errorf("clusterToken with the token file gone = %v; want ErrNewCluster naming --new-cluster", err)
	}
	if files.Exists(path) {
		t.Error("a refused clusterToken wrote a token")
	}
	os.WriteFile(path, []byte(strings.Repeat("a", 64)+"\n"), 0o600)
	if _, _, err := o.Token("", false); !errors.Is(err, ErrNewCluster) {
		t.Errorf("clusterToken with another token = %v; want ErrNewCluster", err)
	}
	fresh, _, err := o.Token("", true)
	if err != nil || fresh == tok || fresh == strings.Repeat("a", 64) {
		t.Errorf("Token(new cluster) = %v; want a new token", err)
	}
}

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
	o := openTest(t, t.TempDir())
	if key, err := o.ReportKey(false, false); err != nil || key != nil {
		t.Fatalf("no report URL: key %x, %v; want none", key, err)
	}
	if _, err := os.Stat(o.path(ReportKeyFile)); err == nil {
		t.Fatal("a report key was made for a recipe without a report URL")
	}
	first, err := o.ReportKey(true, false)
	if err != nil || len(first) != 32 {
		t.Fatalf("first key: %x, %v", first, err)
	}
	if fi, err := os.Stat(o.path(ReportKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	again, _ := o.ReportKey(true, false)
	renewed, _ := o.ReportKey(true, true)
	if !slices.Equal(again, first) || slices.Equal(renewed, first) {
		t.Errorf("kept %v, renewed with --new-cluster %v; want kept and renewed", slices.Equal(again, first), !slices.Equal(renewed, first))
	}
}
