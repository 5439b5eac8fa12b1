package inputs

import (
	"bytes"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
	"github.com/pibake/pibake/recipes"
)

// TestSecretKeyIsStretched: the key published hashes are keyed with is
// PBKDF2-HMAC-SHA256 of the cluster's secrets with 600,000 iterations, as
// Python's hashlib computes it independently; and every secret changes it.
func TestSecretKeyIsStretched(t *testing.T) {
	python := testimage.Tool(t, "python3")
	r := &recipes.Recipe{
		Cluster: recipes.Cluster{Name: "lab", AgentToken: "agent-secret-0123456789"},
		Nodes: []recipes.Node{
			{Hostname: "srv", User: &recipes.User{PasswordHash: "$y$j9T$salt$hash"}},
			{Hostname: "edge", WiFi: &recipes.WiFi{PSK: "weak-wifi-key"}},
		},
	}
	secrets := clusterSecrets(r, "cluster-token-0123456789", r.Nodes...)
	for _, s := range []string{"cluster-token-0123456789", "agent-secret-0123456789", "$y$j9T$salt$hash", "weak-wifi-key"} {
		if !strings.Contains(secrets, s) {
			t.Errorf("the secrets stretched lack %q:\n%s", s, secrets)
		}
	}
	out, err := exec.Command(python, "-c", `import hashlib, sys
print(hashlib.pbkdf2_hmac("sha256", sys.argv[1].encode(), b"pibake published hashes v1", 600000, 32).hex())`, secrets).Output()
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	want := strings.TrimSpace(string(out))
	b := &Session{R: r, Token: "cluster-token-0123456789"}
	if got := hex.EncodeToString(b.recipeKey()); got != want {
		t.Errorf("secret key %s; want %s (python hashlib)", got, want)
	}
	other := *r
	other.Nodes = []recipes.Node{r.Nodes[0], {Hostname: "edge", WiFi: &recipes.WiFi{PSK: "weak-wifi-key2"}}}
	if hex.EncodeToString((&Session{R: &other, Token: b.Token}).recipeKey()) == want {
		t.Error("another Wi-Fi key gives the same recipe key")
	}
	// A node's key covers its own secrets and the tokens, not another
	// node's: a change elsewhere does not rebuild it.
	if !bytes.Equal(b.nodeKey(r.Nodes[0]), (&Session{R: &other, Token: b.Token}).nodeKey(other.Nodes[0])) {
		t.Error("another node's Wi-Fi key changed srv's key")
	}
	if bytes.Equal(b.nodeKey(r.Nodes[1]), (&Session{R: &other, Token: b.Token}).nodeKey(other.Nodes[1])) {
		t.Error("edge's own Wi-Fi key did not change its key")
	}
	if bytes.Equal(b.nodeKey(r.Nodes[0]), (&Session{R: r, Token: "another-token-0123456789"}).nodeKey(r.Nodes[0])) {
		t.Error("the token did not change srv's key")
	}
}
