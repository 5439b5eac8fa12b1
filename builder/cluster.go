package builder

import (
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
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/internal/atomicfile"
	"github.com/pibake/pibake/recipes"
)

// Where the cluster's identity is kept, relative to the output directory.
const (
	// CADir holds the CAs pibake generated (cluster.ca = "generate").
	CADir = stateDir + "/ca"
	// nodePasswordsFile holds each node's password generation, raised by
	// --rotate-node-password.
	nodePasswordsFile = stateDir + "/node-passwords.json"
)

// caWarnDays: a build warns when the cluster CA expires within this many
// days.
const caWarnDays = 365

// settleCA loads the cluster CA kept in the output directory, or makes it
// when the recipe asks for one and the directory has none yet. Called
// under the output directory's lock, after the token is settled. A CA
// that is missing, incomplete or not the one the directory's images pin
// is refused rather than made again: a new CA is a new cluster, which the
// running nodes would not trust (--new-cluster says so on purpose).
func (b *build) settleCA(out *output, now time.Time) error {
	if b.r.Cluster.CA != recipes.CAGenerate {
		if out.m.CAHash != "" {
			b.logf("the recipe no longer asks for a generated CA (ca = %q): nodes built from now on join with short tokens that pin nothing; the CA stays in %s", b.r.Cluster.CA, out.path(CADir))
		}
		return nil
	}
	dir, replaced := out.path(CADir), out.path(CADir+".replaced")
	if err := b.settleReplacedCA(dir, replaced); err != nil {
		return err
	}
	_, err := os.Lstat(dir)
	exists := err == nil
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("cluster CA: %w", err)
	case exists && b.opt.NewCluster:
		// Set aside, not removed, until the new CA exists: a failure or a
		// kill in between gives the old one back.
		if err := os.Rename(dir, replaced); err != nil {
			return fmt.Errorf("replace cluster CA: %w", describeWriteError(b.outDir, err))
		}
		exists = false
	case !exists && !b.opt.NewCluster && out.m.CAHash != "":
		return fmt.Errorf("%w: %s is missing, but this directory holds images that pin the CA it held (sha256 %s…); a new CA would make every node built now refuse the running cluster. Restore the directory from a backup, or start a new cluster on purpose with --new-cluster (every node is rebuilt and must be re-flashed)", ErrNewCluster, dir, short(out.m.CAHash))
	case !exists && !b.opt.NewCluster && len(out.m.Nodes) > 0:
		return fmt.Errorf(`%w: this directory holds images built without a generated CA (ca = "none"), whose founding server makes its own CA at first start; nodes pinning a new CA would refuse that cluster. If it runs, keep ca = "none"; to start it over with a generated CA, build with --new-cluster (every node is rebuilt and must be re-flashed)`, ErrNewCluster)
	}
	var ca *identity.CA
	if exists {
		ca, err = identity.Load(dir, now)
		if err != nil {
			return fmt.Errorf("%w; restore %s from a backup, or start a new cluster on purpose with --new-cluster (every node must be re-flashed)", err, dir)
		}
	} else {
		if err := os.MkdirAll(out.path(stateDir), 0o700); err != nil {
			return fmt.Errorf("cluster CA: %w", describeWriteError(b.outDir, err))
		}
		if ca, err = identity.Create(dir, now); err != nil {
			if err := b.settleReplacedCA(dir, replaced); err != nil {
				b.logf("%v", err)
			}
			return describeWriteError(b.outDir, err)
		}
		if err := b.settleReplacedCA(dir, replaced); err != nil {
			return err
		}
		b.logf("generated the cluster CA in %s (sha256 %s…); keep the directory safe: it holds the keys to the cluster", dir, short(ca.Hash()))
	}
	if out.m.CAHash != "" && ca.Hash() != out.m.CAHash && !b.opt.NewCluster {
		return fmt.Errorf("%w: the cluster CA in %s (sha256 %s…) is not the one this directory's images pin (sha256 %s…); restore the original, or start a new cluster on purpose with --new-cluster (every node is rebuilt and must be re-flashed)", ErrNewCluster, dir, short(ca.Hash()), short(out.m.CAHash))
	}
	if left := ca.Expires.Sub(now); left < caWarnDays*24*time.Hour {
		b.logf("warning: the cluster CA expires on %s; rotate it on the cluster (k3s certificate rotate-ca) or start a new one", ca.Expires.UTC().Format(time.DateOnly))
	}
	b.ca = ca
	return b.writeKubeconfig(out, now)
}

// settleReplacedCA finishes a replacement of the cluster CA
// (--new-cluster) that a failure or a kill interrupted: with the new CA in
// place the old one goes; without it, the old one is put back.
func (b *build) settleReplacedCA(dir, replaced string) error {
	if _, err := os.Lstat(replaced); err != nil {
		return nil
	}
	if _, err := os.Lstat(dir); err == nil {
		if err := os.RemoveAll(replaced); err != nil {
			return fmt.Errorf("remove the replaced cluster CA: %w", describeWriteError(b.outDir, err))
		}
		b.logf("removed the old cluster CA (--new-cluster)")
		return nil
	}
	if err := os.Rename(replaced, dir); err != nil {
		return fmt.Errorf("put back the cluster CA set aside in %s: %w", replaced, describeWriteError(b.outDir, err))
	}
	b.logf("put back the cluster CA in %s: its replacement did not finish", dir)
	return nil
}

// writeKubeconfig writes <cluster>.kubeconfig, the admin's access to the
// cluster, renewing the admin certificate when it nears its end. It is
// rewritten only when its content changes.
func (b *build) writeKubeconfig(out *output, now time.Time) error {
	renewed, err := b.ca.EnsureAdmin(now)
	if err != nil {
		return describeWriteError(b.outDir, err)
	}
	data, err := b.ca.Kubeconfig(b.r.Cluster.Name, b.r.Cluster.APIServer)
	if err != nil {
		return err
	}
	name := KubeconfigFile(b.r.Cluster.Name)
	if old, err := os.ReadFile(out.path(name)); err == nil && string(old) == string(data) {
		return nil
	}
	if err := atomicfile.WriteFile(out.path(name), data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", name, describeWriteError(b.outDir, err))
	}
	what := "wrote"
	if renewed {
		what = "wrote (with a new admin certificate)"
	}
	b.logf("%s %s: kubectl --kubeconfig %s get nodes (the certificate expires %s)", what, out.path(name), out.path(name), b.ca.AdminExpires().UTC().Format(time.DateOnly))
	return nil
}

// KubeconfigFile is the admin kubeconfig's name in the output directory.
func KubeconfigFile(cluster string) string { return cluster + ".kubeconfig" }

// nodeIdentity is what a node's payload gets from the cluster identity:
// the token it joins with, the CA files (the founding server only) and its
// password.
func (b *build) nodeIdentity(n *recipes.Node, opt *firstboot.Options) {
	opt.NodePassword = identity.NodePassword(b.token, b.r.Cluster.Name, n.Hostname, b.passwordGens[n.Hostname])
	if b.ca == nil {
		return
	}
	opt.CAHash = b.ca.Hash()
	if n.JoinURL == "" {
		opt.CAFiles = map[string][]byte{}
		for _, name := range identity.K3sFiles() {
			opt.CAFiles[name] = b.ca.File(name)
		}
		return
	}
	// Joiners carry the token k3s writes into its own token files: a
	// server joins as "server"; an agent as "node" with the agent token,
	// or "server" without one, as node-token holds.
	user, secret := identity.ServerUser, b.token
	if n.Role == recipes.RoleAgent {
		if at := b.r.Cluster.AgentToken.Reveal(); at != "" {
			user, secret = identity.AgentUser, at
		}
	}
	opt.JoinToken = identity.Token(b.ca.Hash(), user, secret)
}

// settleNodePasswords reads each node's password generation and raises
// those --rotate-node-password names, before any node is built.
func (b *build) settleNodePasswords(out *output) error {
	b.passwordGens = map[string]int{}
	path := out.path(nodePasswordsFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &b.passwordGens); err != nil {
			return fmt.Errorf("%s: %w; fix or remove it (removing it gives every rotated node its first password again)", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("read node password generations: %w", err)
	}
	if b.opt.NewCluster {
		b.passwordGens = map[string]int{} // a new cluster knows no node yet
	}
	if len(b.opt.RotateNodePassword) == 0 && !b.opt.NewCluster {
		return nil
	}
	for _, host := range b.opt.RotateNodePassword {
		b.passwordGens[strings.ToLower(host)]++
	}
	data, err = json.MarshalIndent(b.passwordGens, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out.path(stateDir), 0o700); err != nil {
		return describeWriteError(b.outDir, err)
	}
	if err := atomicfile.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("keep node password generations: %w", describeWriteError(b.outDir, err))
	}
	for _, host := range b.opt.RotateNodePassword {
		b.logf("%s: new node password (generation %d). k3s refuses a new password for a node name it knows: before the re-flashed node boots, run kubectl delete node %s", host, b.passwordGens[strings.ToLower(host)], host)
	}
	return nil
}

// ErrNotSelected is returned when an option names a node that --node
// leaves out.
var ErrNotSelected = errors.New("the node is not among those --node selects")

// checkRotations refuses --rotate-node-password for a node the recipe
// does not have, or one this build does not build.
func checkRotations(r *recipes.Recipe, nodes []*recipes.Node, hosts []string) error {
	for _, host := range hosts {
		if !slices.ContainsFunc(r.Nodes, func(n recipes.Node) bool { return strings.EqualFold(n.Hostname, host) }) {
			return fmt.Errorf("%w %q in --rotate-node-password", ErrUnknownNode, host)
		}
		if !slices.ContainsFunc(nodes, func(n *recipes.Node) bool { return strings.EqualFold(n.Hostname, host) }) {
			return fmt.Errorf("--rotate-node-password %s: %w; add --node %s", host, ErrNotSelected, host)
		}
	}
	return nil
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}

// ReadCAHash reads the hash of the CA kept in an output directory, for
// `pibake plan`; "" when there is none (or it cannot be used).
func ReadCAHash(outDir string) string {
	ca, err := identity.Load(filepath.Join(outDir, filepath.FromSlash(CADir)), time.Now())
	if err != nil {
		return ""
	}
	return ca.Hash()
}
