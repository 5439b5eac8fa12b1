package outdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/pibake/pibake/builder/identity"
	"github.com/pibake/pibake/builder/outdir/seam"
	"github.com/pibake/pibake/recipes"
)

// ClusterCA loads the cluster CA kept in the directory, or makes it when
// the recipe asks for one (ca is recipes.CAGenerate) and the directory
// has none yet; nil when it does not ask. Call it after the token is
// settled. A CA that is missing, incomplete or not the one the
// directory's images pin is refused rather than made again: a new CA is
// a new cluster, which the running nodes would not trust (newCluster
// says so on purpose). identity writes the CA's own files; the
// directory's steps here are setting an old CA aside and putting it back.
func (d *Dir) ClusterCA(ca recipes.CAMode, newCluster bool, now time.Time) (*identity.CA, error) {
	m := d.Manifest()
	if ca != recipes.CAGenerate {
		if m.CAHash != "" {
			d.logf("the recipe no longer asks for a generated CA (ca = %q): nodes built from now on join with short tokens that pin nothing; the CA stays in %s", ca, d.path(CADir))
		}
		return nil, nil
	}
	dir, replaced := d.path(CADir), d.path(CADir+".replaced")
	if err := d.settleReplacedCA(dir, replaced); err != nil {
		return nil, err
	}
	_, err := os.Lstat(dir)
	exists := err == nil
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("cluster CA: %w", err)
	case exists && newCluster:
		// Set aside, not removed, until the new CA exists: a failure or a
		// kill in between gives the old one back.
		if err := d.fs.Rename(dir, replaced); err != nil {
			return nil, fmt.Errorf("replace cluster CA: %w", DescribeWriteError(d.dir, err))
		}
		exists = false
	case !exists && !newCluster && m.CAHash != "":
		return nil, fmt.Errorf("%w: %s is missing, but this directory holds images that pin the CA it held (sha256 %s…); a new CA would make every node built now refuse the running cluster. Restore the directory from a backup, or start a new cluster on purpose with --new-cluster (every node is rebuilt and must be re-flashed)", ErrNewCluster, dir, short(m.CAHash))
	case !exists && !newCluster && len(m.Nodes) > 0:
		return nil, fmt.Errorf(`%w: this directory holds images built without a generated CA (ca = "none"), whose founding server makes its own CA at first start; nodes pinning a new CA would refuse that cluster. If it runs, keep ca = "none"; to start it over with a generated CA, build with --new-cluster (every node is rebuilt and must be re-flashed)`, ErrNewCluster)
	}
	c, err := d.loadOrCreateCA(exists, dir, replaced, now)
	if err != nil {
		return nil, err
	}
	if m.CAHash != "" && c.Hash() != m.CAHash && !newCluster {
		return nil, fmt.Errorf("%w: the cluster CA in %s (sha256 %s…) is not the one this directory's images pin (sha256 %s…); restore the original, or start a new cluster on purpose with --new-cluster (every node is rebuilt and must be re-flashed)", ErrNewCluster, dir, short(c.Hash()), short(m.CAHash))
	}
	if left := c.Expires.Sub(now); left < caWarnDays*24*time.Hour {
		d.logf("warning: the cluster CA expires on %s; rotate it on the cluster (k3s certificate rotate-ca) or start a new one", c.Expires.UTC().Format(time.DateOnly))
	}
	return c, nil
}

// loadOrCreateCA loads the CA in dir, or creates it there, settling an old
// one set aside in replaced either way.
func (d *Dir) loadOrCreateCA(exists bool, dir, replaced string, now time.Time) (*identity.CA, error) {
	if exists {
		c, err := identity.Load(dir, now)
		if err != nil {
			return nil, fmt.Errorf("%w; restore %s from a backup, or start a new cluster on purpose with --new-cluster (every node must be re-flashed)", err, dir)
		}
		return c, nil
	}
	if err := seam.MkdirIfMissing(d.fs, d.path(stateDir), 0o700); err != nil {
		return nil, fmt.Errorf("cluster CA: %w", DescribeWriteError(d.dir, err))
	}
	c, err := identity.Create(dir, now)
	if err != nil {
		if err := d.settleReplacedCA(dir, replaced); err != nil {
			d.logf("%v", err)
		}
		return nil, DescribeWriteError(d.dir, err)
	}
	if err := d.settleReplacedCA(dir, replaced); err != nil {
		return nil, err
	}
	d.logf("generated the cluster CA in %s (sha256 %s…); keep the directory safe: it holds the keys to the cluster", dir, short(c.Hash()))
	return c, nil
}

// settleReplacedCA finishes a replacement of the cluster CA
// (--new-cluster) that a failure or a kill interrupted: with the new CA in
// place the old one goes; without it, the old one is put back.
func (d *Dir) settleReplacedCA(dir, replaced string) error {
	if _, err := os.Lstat(replaced); err != nil {
		return nil
	}
	if _, err := os.Lstat(dir); err == nil {
		if err := d.fs.RemoveAll(replaced); err != nil {
			return fmt.Errorf("remove the replaced cluster CA: %w", DescribeWriteError(d.dir, err))
		}
		d.logf("removed the old cluster CA (--new-cluster)")
		return nil
	}
	if err := d.fs.Rename(replaced, dir); err != nil {
		return fmt.Errorf("put back the cluster CA set aside in %s: %w", replaced, DescribeWriteError(d.dir, err))
	}
	d.logf("put back the cluster CA in %s: its replacement did not finish", dir)
	return nil
}

// KubeconfigFile is the admin kubeconfig's name in the output directory.
func KubeconfigFile(cluster string) string { return cluster + ".kubeconfig" }

// WriteKubeconfig writes <cluster>.kubeconfig, the admin's access to the
// cluster, renewing the admin certificate when it nears its end. It is
// rewritten only when its content changes.
func (d *Dir) WriteKubeconfig(c *identity.CA, cluster, apiServer string, now time.Time) error {
	renewed, err := c.EnsureAdmin(now)
	if err != nil {
		return DescribeWriteError(d.dir, err)
	}
	data, err := c.Kubeconfig(cluster, apiServer)
	if err != nil {
		return err
	}
	name := KubeconfigFile(cluster)
	if old, err := os.ReadFile(d.path(name)); err == nil && string(old) == string(data) {
		return nil
	}
	if err := seam.WriteAtomic(d.fs, d.path(name), data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", name, DescribeWriteError(d.dir, err))
	}
	what := "wrote"
	if renewed {
		what = "wrote (with a new admin certificate)"
	}
	d.logf("%s %s: kubectl --kubeconfig %s get nodes (the certificate expires %s)", what, d.path(name), d.path(name), c.AdminExpires().UTC().Format(time.DateOnly))
	return nil
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}
