package outdir

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pibake/pibake/builder/identity"
	"github.com/pibake/pibake/builder/outdir/seam"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/recipes"
)

// The cluster's secrets, kept in the output directory (relative to it),
// created once under its lock and reused by every later run: files 0600 in
// a 0700 directory, never logged.
const (
	// TokenFile keeps a generated cluster token.
	TokenFile = stateDir + "/token"
	// CADir holds the CAs pibake generated (cluster.ca = "generate").
	CADir = stateDir + "/ca"
	// ReportKeyFile keeps the out directory's report key: the key `pibake
	// watch` checks the nodes' first-boot reports with. Each image carries
	// only its own node key, derived from it with the node's hostname and
	// build id (report.NodeKey).
	ReportKeyFile = stateDir + "/report.key"
	// nodePasswordsFile holds each node's password generation, raised by
	// --rotate-node-password.
	nodePasswordsFile = stateDir + "/node-passwords.json"
)

// ErrNewCluster marks a run that would need a new cluster identity: the
// caller says so on purpose (--new-cluster) or stops.
var ErrNewCluster = errors.New("the cluster's identity would change")

// caWarnDays: a run warns when the cluster CA expires within this many
// days.
const caWarnDays = 365

// keep writes a secret file of the directory atomically, mode 0600 in the
// 0700 .pibake directory.
func (d *Dir) keep(name string, data []byte) error {
	if err := seam.MkdirIfMissing(d.fs, d.path(stateDir), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", d.path(stateDir), DescribeWriteError(d.dir, err))
	}
	return seam.WriteAtomic(d.fs, d.path(name), data, 0o600)
}

// Token returns the token the nodes carry: the recipe's (when it sets
// one), or the one kept in TokenFile, generated (32 random bytes, hex) on
// first use. Rebuilt nodes must carry the token the running cluster
// knows, so a kept token is checked like a recipe's and against the one
// the directory's images were built with, and it is never made again
// behind the user's back: images built with a token that is gone are
// refused unless newCluster. source is TokenFromRecipe or TokenGenerated.
func (d *Dir) Token(recipeToken string, newCluster bool) (tok, source string, err error) {
	if recipeToken != "" {
		return recipeToken, TokenFromRecipe, nil
	}
	m := d.Manifest()
	path := d.path(TokenFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil && !newCluster:
		tok := strings.TrimSpace(string(b))
		if err := recipes.CheckToken(tok); err != nil {
			return "", "", fmt.Errorf("cluster token in %s: %w; restore the file from a backup, or start a new cluster on purpose with --new-cluster", path, err)
		}
		if m.TokenID != "" && TokenID(tok) != m.TokenID {
			return "", "", fmt.Errorf("%w: the cluster token in %s is not the one this directory's images were built with; restore the original file, or start a new cluster on purpose with --new-cluster (every node is rebuilt and must be re-flashed)", ErrNewCluster, path)
		}
		return tok, TokenGenerated, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", "", fmt.Errorf("read cluster token: %w", err)
	case err != nil && !newCluster && (m.TokenID != "" || len(m.Nodes) > 0 && m.Token != TokenFromRecipe):
		return "", "", fmt.Errorf("%w: %s is missing, but this directory holds images built with the token it held; a new token would make rebuilt nodes unable to join the running cluster. Restore the file from a backup, or start a new cluster on purpose with --new-cluster (every node is rebuilt and must be re-flashed)", ErrNewCluster, path)
	}
	raw := make([]byte, 32)
	rand.Read(raw) // never fails (crypto/rand, Go 1.24)
	tok = hex.EncodeToString(raw)
	if err := d.keep(TokenFile, []byte(tok+"\n")); err != nil {
		return "", "", fmt.Errorf("keep cluster token: %w", DescribeWriteError(d.dir, err))
	}
	if newCluster {
		d.logf("generated a new cluster token in %s (--new-cluster): every node is rebuilt", path)
	}
	return tok, TokenGenerated, nil
}

// TokenID identifies a generated token in manifest.json without revealing
// it: a generated token is 32 random bytes, so its hash says nothing.
func TokenID(tok string) string {
	sum := sha256.Sum256([]byte("pibake generated token\x00" + tok))
	return hex.EncodeToString(sum[:8])
}

// HasToken, HasReportKey and HasCA say whether the directory keeps these
// secrets: a shard may not make them (pibake init does).
func (d *Dir) HasToken() bool     { return files.Exists(d.path(TokenFile)) }
func (d *Dir) HasReportKey() bool { return files.Exists(d.path(ReportKeyFile)) }
func (d *Dir) HasCA() bool        { return files.Exists(d.path(CADir)) }

// ReportKey returns the out directory's report key when needed (a node
// reports its first boot), generating it (32 random bytes, hex, mode
// 0600) on first use. It is kept like the token, so rebuilding the same
// inputs gives the same bytes; a lost key only means the next build makes
// a new one and rebuilds the reporting nodes. A new cluster gets a new
// key, so the old cluster's cards cannot report as older builds of the
// new one.
func (d *Dir) ReportKey(needed, newCluster bool) ([]byte, error) {
	if !needed {
		return nil, nil
	}
	path := d.path(ReportKeyFile)
	if key, err := readReportKey(path); err == nil && !newCluster {
		return key, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, 32)
	rand.Read(key) // never fails (crypto/rand, Go 1.24)
	if err := d.keep(ReportKeyFile, []byte(hex.EncodeToString(key)+"\n")); err != nil {
		return nil, fmt.Errorf("keep report key: %w", DescribeWriteError(d.dir, err))
	}
	d.logf("generated the first-boot report key in %s", path)
	return key, nil
}

func readReportKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("report key in %s is not 64 hex digits; delete it and build again (the reporting nodes are rebuilt and must be re-flashed)", path)
	}
	return key, nil
}

// NodePasswordGens reads each node's password generation (0 when absent)
// and raises those rotate names, keeping them, before any node is built.
// A new cluster knows no node yet: every generation starts again.
func (d *Dir) NodePasswordGens(rotate []string, newCluster bool) (map[string]int, error) {
	gens := map[string]int{}
	path := d.path(nodePasswordsFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &gens); err != nil {
			return nil, fmt.Errorf("%s: %w; fix or remove it (removing it gives every rotated node its first password again)", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read node password generations: %w", err)
	}
	if newCluster {
		gens = map[string]int{}
	}
	if len(rotate) == 0 && !newCluster {
		return gens, nil
	}
	for _, host := range rotate {
		gens[strings.ToLower(host)]++
	}
	if data, err = json.MarshalIndent(gens, "", "  "); err != nil {
		return nil, err
	}
	if err := d.keep(nodePasswordsFile, append(data, '\n')); err != nil {
		return nil, fmt.Errorf("keep node password generations: %w", DescribeWriteError(d.dir, err))
	}
	for _, host := range rotate {
		d.logf("%s: new node password (generation %d). k3s refuses a new password for a node name it knows: before the re-flashed node boots, run kubectl delete node %s", host, gens[strings.ToLower(host)], host)
	}
	return gens, nil
}

// ReadCAHash reads the hash of the CA kept in an output directory, for
// `pibake plan`; "" when there is none (or it cannot be used).
func ReadCAHash(dir string) string {
	ca, err := identity.Load(filepath.Join(dir, filepath.FromSlash(CADir)), time.Now())
	if err != nil {
		return ""
	}
	return ca.Hash()
}

// WatchTarget is what `pibake watch` needs from an out directory: the
// report key and the build ids of every node's images built or flashed
// from there.
type WatchTarget struct {
	Key    []byte
	Builds map[string][]string // hostname → build ids
}

// ReadWatchTarget reads an out directory for `pibake watch`.
func ReadWatchTarget(dir string) (WatchTarget, error) {
	path := filepath.Join(dir, filepath.FromSlash(ReportKeyFile))
	key, err := readReportKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		return WatchTarget{}, fmt.Errorf("%s has no report key (%s): build the recipe there first, with a report URL in it", dir, path)
	}
	if err != nil {
		return WatchTarget{}, err
	}
	t := WatchTarget{Key: key, Builds: map[string][]string{}}
	add := func(host, build string) {
		if build != "" && !slices.Contains(t.Builds[host], build) {
			t.Builds[host] = append(t.Builds[host], build)
		}
	}
	m := ReadManifest(dir)
	for _, n := range m.Nodes {
		if n.State != StateOrphan {
			add(n.Hostname, n.BuildID())
		}
	}
	// Cards flashed from the directory count as its images too, built or
	// not (pibake flash records the build id it wrote).
	for _, f := range m.Flashes {
		if f.Result == "verified" {
			add(f.Node, f.Build)
		}
	}
	return t, nil
}
