package builder

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/pibake/pibake/internal/atomicfile"
	"github.com/pibake/pibake/recipes"
)

// TokenFile is where a generated cluster token is kept, relative to the
// output directory.
const TokenFile = ".pibake/token"

// ErrNewCluster marks a build that would need a new cluster token: the
// caller says so on purpose (Options.NewCluster) or stops.
var ErrNewCluster = errors.New("the cluster's identity would change")

// clusterToken returns the token the nodes carry: the recipe's, or the one
// kept in .pibake/token, generated (32 random bytes, hex) on first use.
// Rebuilt nodes must carry the token the running cluster knows, so a kept
// token is checked like a recipe's and against the one the directory's
// images were built with, and it is never made again behind the user's
// back: images built with a token that is gone are refused unless
// newCluster. Called under the output directory's lock. The file is mode
// 0600 in a 0700 directory and written atomically; the token is never
// logged.
func (o *output) clusterToken(r *recipes.Recipe, newCluster bool) (tok, source string, err error) {
	if tok := r.Cluster.Token.Reveal(); tok != "" {
		return tok, "recipe", nil
	}
	path := o.path(TokenFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil && !newCluster:
		tok := strings.TrimSpace(string(b))
		if err := recipes.CheckToken(tok); err != nil {
			return "", "", fmt.Errorf("cluster token in %s: %w; restore the file from a backup, or start a new cluster on purpose with --new-cluster", path, err)
		}
		if o.m.TokenID != "" && tokenID(tok) != o.m.TokenID {
			return "", "", fmt.Errorf("%w: the cluster token in %s is not the one this directory's images were built with; restore the original file, or start a new cluster on purpose with --new-cluster (every node is rebuilt and must be re-flashed)", ErrNewCluster, path)
		}
		return tok, "generated", nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", "", fmt.Errorf("read cluster token: %w", err)
	case err != nil && !newCluster && (o.m.TokenID != "" || len(o.m.Nodes) > 0 && o.m.Token != "recipe"):
		return "", "", fmt.Errorf("%w: %s is missing, but this directory holds images built with the token it held; a new token would make rebuilt nodes unable to join the running cluster. Restore the file from a backup, or start a new cluster on purpose with --new-cluster (every node is rebuilt and must be re-flashed)", ErrNewCluster, path)
	}

	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", "", fmt.Errorf("generate cluster token: %w", err)
	}
	tok = hex.EncodeToString(raw)
	if err := os.MkdirAll(o.path(stateDir), 0o700); err != nil {
		return "", "", fmt.Errorf("create %s: %w", o.path(stateDir), err)
	}
	if err := atomicfile.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("keep cluster token: %w", describeWriteError(o.dir, err))
	}
	if newCluster {
		o.logf("generated a new cluster token in %s (--new-cluster): every node is rebuilt", path)
	}
	return tok, "generated", nil
}
