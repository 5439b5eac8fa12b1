package builder

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pibake/pibake/internal/atomicfile"
	"github.com/pibake/pibake/internal/report"
	"github.com/pibake/pibake/recipes"
)

// ReportKeyFile keeps the out directory's report key, relative to it: the
// key `pibake watch` checks the nodes' first-boot reports with. Each image
// carries only its own node key, derived from it with the node's hostname
// and build id (report.NodeKey), so a card taken from one node cannot sign
// for another, or for another build of itself.
const ReportKeyFile = stateDir + "/report.key"

// reportKey returns the out directory's report key when a node of the
// recipe reports, generating it (32 random bytes, hex, mode 0600) on first
// use. It is kept like the token, so rebuilding the same inputs gives the
// same bytes; a lost key only means the next build makes a new one and
// rebuilds the reporting nodes. A new cluster gets a new key, so the old
// cluster's cards cannot report as older builds of the new one. Called
// under the output directory's lock.
func (o *output) reportKey(r *recipes.Recipe, newCluster bool) ([]byte, error) {
	if !reports(r) {
		return nil, nil
	}
	path := o.path(ReportKeyFile)
	if key, err := readReportKey(path); err == nil && !newCluster {
		return key, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, 32)
	rand.Read(key) // never fails (crypto/rand, Go 1.24)
	if err := os.MkdirAll(o.path(stateDir), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.path(stateDir), err)
	}
	if err := atomicfile.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("keep report key: %w", describeWriteError(o.dir, err))
	}
	o.logf("generated the first-boot report key in %s", path)
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

// reports says whether a node of r reports its first boot.
func reports(r *recipes.Recipe) bool {
	for _, n := range r.Nodes {
		if n.ReportURL != "" {
			return true
		}
	}
	return false
}

// nodeReportKey is the key node n's image signs its reports with, in hex;
// empty when it does not report.
func (b *build) nodeReportKey(n *recipes.Node, buildID string) string {
	if n.ReportURL == "" || b.reportKey == nil {
		return ""
	}
	return hex.EncodeToString(report.NodeKey(b.reportKey, n.Hostname, buildID))
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
	path := (&output{dir: dir}).path(ReportKeyFile)
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
	for _, n := range readManifest(dir).Nodes {
		if len(n.Inputs) >= 16 && n.State != StateOrphan {
			add(n.Hostname, n.Inputs[:16])
		}
	}
	// Cards flashed from the directory count as its images too, built or
	// not (pibake flash records the build id it wrote).
	var flashed struct {
		Flashes []struct{ Node, Build, Result string }
	}
	if b, err := os.ReadFile(filepath.Join(dir, "manifest.json")); err == nil {
		json.Unmarshal(b, &flashed) // a damaged manifest only means fewer builds known
	}
	for _, f := range flashed.Flashes {
		if f.Result == "verified" {
			add(f.Node, f.Build)
		}
	}
	return t, nil
}
