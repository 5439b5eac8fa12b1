package inputs

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pibake/pibake/recipes"
)

// The hashes pibake publishes (manifest.json's recipe_hash and each node's
// inputs, whose first 16 hex digits are the build id on the card) cover
// the recipe's secrets, so that a changed secret rebuilds. A plain SHA-256
// of a weak Wi-Fi key or a short token beside known public inputs could be
// tried offline guess by guess; so they are HMACs keyed with a key
// stretched from the secrets they cover: each guess
// costs a PBKDF2 of secretIterations, as OWASP asks for stored passwords
// (600,000 for PBKDF2-HMAC-SHA256), and the same secrets still give the
// same bytes on any machine.
const secretIterations = 600_000

// secretKeys remembers the keys already stretched in this process (tests
// and a build's later steps ask again for the same secrets), by the
// SHA-256 of the secrets; it never leaves memory.
var secretKeys sync.Map

// stretches counts the keys stretched in this process: what a test
// counts per node (issue 29: a stretch costs about half of what copying
// a node's image does).
var stretches atomic.Int64

// Stretches is how many keys this process has stretched so far.
func Stretches() int64 { return stretches.Load() }

// recipeKey keys the recipe's hash: stretched from every secret of the
// cluster.
func (s *Session) recipeKey() []byte {
	return stretchSecrets(clusterSecrets(s.R, s.Token, s.R.Nodes...))
}

// nodeKey keys node n's inputs hash: stretched from the cluster's tokens
// and n's own secrets only, so that another node's change does not change
// n's hash (and rebuild it). Nodes with the same secrets (a fleet sharing
// its defaults) share one stretch.
func (s *Session) nodeKey(n recipes.Node) []byte {
	return stretchSecrets(clusterSecrets(s.R, s.Token, recipes.Node{User: n.User, WiFi: n.WiFi}))
}

// clusterSecrets is secrets of the cluster in one canonical string: the
// token in effect (the recipe's or the generated one), the agent token,
// and the given nodes' password hashes and Wi-Fi keys.
func clusterSecrets(r *recipes.Recipe, token string, nodes ...recipes.Node) string {
	var s strings.Builder
	fmt.Fprintf(&s, "cluster %q\ntoken %q\nagent-token %q\n", r.Cluster.Name, token, r.Cluster.AgentToken.Reveal())
	for _, n := range nodes {
		if n.User != nil {
			fmt.Fprintf(&s, "user %q %q\n", n.Hostname, n.User.PasswordHash.Reveal())
		}
		if n.WiFi != nil {
			fmt.Fprintf(&s, "wifi %q %q\n", n.Hostname, n.WiFi.PSK.Reveal())
		}
	}
	return s.String()
}

func stretchSecrets(secrets string) []byte {
	id := sha256.Sum256([]byte(secrets))
	if k, ok := secretKeys.Load(id); ok {
		return k.([]byte)
	}
	stretches.Add(1)
	k, err := pbkdf2.Key(sha256.New, secrets, []byte("pibake published hashes v1"), secretIterations, 32)
	if err != nil {
		panic(fmt.Sprintf("pbkdf2: %v", err)) // only for FIPS-only lengths, which these are not
	}
	secretKeys.Store(id, k)
	return k
}

// keyedHash is the hash published hashes are made with: HMAC-SHA256.
func keyedHash(key []byte) hash.Hash {
	return hmac.New(sha256.New, key)
}

// hexSum is h's sum in hex.
func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }
