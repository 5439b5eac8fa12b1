package builder

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/recipes"
)

// openTestOutput opens (and locks) an output directory for a test.
func openTestOutput(t *testing.T, dir string) *output {
	t.Helper()
	o, err := openOutput(context.Background(), dir, false, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.close)
	return o
}

func TestClusterToken(t *testing.T) {
	noToken := &recipes.Recipe{}
	out := t.TempDir()
	o := openTestOutput(t, out)
	tok, source, err := o.clusterToken(noToken, false)
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
	again, _, err := o.clusterToken(noToken, false)
	if err != nil || again != tok {
		t.Errorf("second clusterToken returned a different token (%v)", err)
	}
	other, _, err := openTestOutput(t, t.TempDir()).clusterToken(noToken, false)
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
	withToken := &recipes.Recipe{Cluster: recipes.Cluster{Token: "recipe-token-0123456789"}}
	if got, source, err := o.clusterToken(withToken, false); got != "recipe-token-0123456789" || source != "recipe" || err != nil {
		t.Errorf("clusterToken(recipe token) = %q, %s, %v", got, source, err)
	}

	// A kept token is checked like a recipe's; the error never quotes it.
	for _, bad := range []string{"short", "has white space in it 0123", "K10abcdef0123456789::server:x"} {
		if err := os.WriteFile(path, []byte(bad+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := o.clusterToken(noToken, false)
		if err == nil || strings.Contains(err.Error(), bad) {
			t.Errorf("kept token %q: %v; want refused, without quoting it", bad, err)
		}
	}
}

// TestClusterTokenNeverSilentlyRegenerated: images built with a generated
// token that is then lost or replaced are refused, unless the user starts
// a new cluster on purpose.
func TestClusterTokenNeverSilentlyRegenerated(t *testing.T) {
	noToken := &recipes.Recipe{}
	o := openTestOutput(t, t.TempDir())
	tok, _, err := o.clusterToken(noToken, false)
	if err != nil {
		t.Fatal(err)
	}
	o.m.Token, o.m.TokenID = "generated", tokenID(tok)
	o.m.Nodes = []manifestNode{{Hostname: "pi", File: "pi.img"}}
	path := o.path(TokenFile)

	os.Remove(path)
	if _, _, err := o.clusterToken(noToken, false); !errors.Is(err, ErrNewCluster) || !strings.Contains(err.Error(), "--new-cluster") {
		t.Errorf("clusterToken with the token file gone = %v; want ErrNewCluster naming --new-cluster", err)
	}
	if files.Exists(path) {
		t.Error("a refused clusterToken wrote a token")
	}
	os.WriteFile(path, []byte(strings.Repeat("a", 64)+"\n"), 0o600)
	if _, _, err := o.clusterToken(noToken, false); !errors.Is(err, ErrNewCluster) {
		t.Errorf("clusterToken with another token = %v; want ErrNewCluster", err)
	}
	fresh, _, err := o.clusterToken(noToken, true)
	if err != nil || fresh == tok || fresh == strings.Repeat("a", 64) {
		t.Errorf("clusterToken(new cluster) = %v; want a new token", err)
	}
}
