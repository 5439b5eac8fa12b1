package buildtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Principal is the signer's name in the allowed_signers files SigningKey
// writes.
const Principal = "ci@example.org"

// SigningKey makes an ed25519 key with the real ssh-keygen in dir
// (id_ed25519, without a passphrase) and dir/allowed_signers naming its
// public key for Principal in the pibake namespace, and returns their
// paths. CheckInvariant verifies the signatures of an output directory
// whose parent holds the allowed_signers file.
func SigningKey(t testing.TB, dir string) (key, allowed string) {
	t.Helper()
	key = filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", Principal, "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	allowed = filepath.Join(dir, "allowed_signers")
	line := Principal + ` namespaces="pibake" ` + strings.TrimSpace(string(pub)) + "\n"
	if err := os.WriteFile(allowed, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	return key, allowed
}
