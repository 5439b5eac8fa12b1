package model

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pibake/pibake/recipes/lockfile"
)

// LockPath is where a recipe's lock file lives: beside a recipe file
// (lab.hcl.lock), or inside a recipe directory (pibake.lock). It does not
// end in .hcl, so a directory recipe never reads it as a recipe file.
func LockPath(r *Recipe) string {
	if fi, err := os.Stat(r.Path); err == nil && fi.IsDir() {
		return filepath.Join(r.Path, "pibake.lock")
	}
	return r.Path + ".lock"
}

// ErrStaleLock marks a lock made for other recipe settings.
var ErrStaleLock = errors.New("the lock file does not match the recipe")

// ApplyLock makes r use what the lock pins: the image's URL and checksum,
// the k3s version. A lock made for another image source or channel is an
// error, never silently ignored.
func (r *Recipe) ApplyLock(l *lockfile.Lock) error {
	renew := fmt.Sprintf("run pibake lock %s (or build with --update-lock)", r.Path)
	if l.Image.Source != r.Image.Source {
		return fmt.Errorf("%w: %s pins image.source %q, but the recipe says %q; %s", ErrStaleLock, l.Path, l.Image.Source, r.Image.Source, renew)
	}
	if r.Image.SHA256 != "" && r.Image.SHA256 != l.Image.SHA256 {
		return fmt.Errorf("%w: the recipe pins image sha256 %s, %s pins %s; %s", ErrStaleLock, r.Image.SHA256, l.Path, l.Image.SHA256, renew)
	}
	switch {
	case r.Cluster.K3sChannel != "" && (l.K3s == nil || l.K3s.Channel != r.Cluster.K3sChannel):
		return fmt.Errorf("%w: the recipe follows k3s channel %q, which %s does not pin; %s", ErrStaleLock, r.Cluster.K3sChannel, l.Path, renew)
	case r.Cluster.K3sChannel == "" && l.K3s != nil:
		return fmt.Errorf("%w: %s pins k3s channel %q, but the recipe names k3s_version %s; %s", ErrStaleLock, l.Path, l.K3s.Channel, r.Cluster.K3sVersion, renew)
	}
	r.Image.Source, r.Image.SHA256 = l.Image.URL, l.Image.SHA256
	if l.K3s != nil {
		r.Cluster.K3sVersion, r.Cluster.K3sChannel = l.K3s.Version, ""
	}
	return nil
}
