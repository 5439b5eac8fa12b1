// Package builder turns a loaded recipe into node images: base image
// acquisition, disk image editing and per-node outputs.
//
// This package is internal to pibake and not a stable API.
package builder

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pibake/pibake/internal/atomicfile"
)

// TokenFile is where a generated cluster token is kept, relative to the
// output directory.
const TokenFile = ".pibake/token"

// ClusterToken returns the cluster token kept in outDir, generating it
// (32 random bytes, hex) on first use. Rebuilt nodes must carry the same
// token as the running cluster, so it is reused by every later build into
// the same directory. The file is mode 0600 in a 0700 directory and is
// written atomically; the token is never logged.
func ClusterToken(outDir string) (string, error) {
	path := filepath.Join(outDir, filepath.FromSlash(TokenFile))
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		tok := strings.TrimSpace(string(b))
		if len(tok) < 16 {
			return "", fmt.Errorf("cluster token in %s is damaged (%d characters); restore it from a backup or, for a new cluster, delete it", path, len(tok))
		}
		return tok, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read cluster token: %w", err)
	}

	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate cluster token: %w", err)
	}
	tok := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := atomicfile.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep cluster token: %w", err)
	}
	return tok, nil
}
