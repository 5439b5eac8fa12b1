package outdir

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pibake/pibake/builder/outdir/seam"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/sparse"
)

// ImportSecrets copies the cluster's secrets (token, CA, report key,
// node password generations) and the admin kubeconfig from shard output
// directories into d, where d has none of them yet; where it has, they
// must be the same. Every shard must hold the same secret files: one
// with a token, a CA or node password generations that another lacks was
// not made from the same directory. The admin certificate and kubeconfig
// may differ: a shard renews them when they near their end; the first
// shard's stay.
func (d *Dir) ImportSecrets(shards []string) error {
	if err := sameStateFiles(shards); err != nil {
		return err
	}
	for _, shard := range shards {
		if err := d.importState(shard); err != nil {
			return err
		}
	}
	return nil
}

func (d *Dir) importState(shard string) error {
	names, err := stateFiles(shard)
	if err != nil {
		return err
	}
	for _, rel := range names {
		src := filepath.Join(shard, filepath.FromSlash(rel))
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		if have, err := os.ReadFile(d.path(rel)); err == nil {
			if string(have) != string(data) && !renewable(rel) {
				return fmt.Errorf("merge: %s differs from %s: the shards were not made from this directory's secrets", d.path(rel), src)
			}
			continue
		}
		if err := d.mkdirs(filepath.Dir(rel)); err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		if err := seam.WriteAtomic(d.fs, d.path(rel), data, 0o600); err != nil {
			return fmt.Errorf("merge: %w", DescribeWriteError(d.dir, err))
		}
	}
	return nil
}

// mkdirs creates a directory of d and its missing parents inside d, each
// 0700 (they hold secrets).
func (d *Dir) mkdirs(rel string) error {
	if rel == "." || rel == "" {
		return nil
	}
	if err := d.mkdirs(filepath.Dir(rel)); err != nil {
		return err
	}
	return seam.MkdirIfMissing(d.fs, d.path(filepath.ToSlash(rel)), 0o700)
}

// stateFiles lists the cluster state an output directory holds (see
// ImportSecrets), as slash-separated paths relative to it.
func stateFiles(dir string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		switch {
		case e.IsDir() && (rel == "." || rel == stateDir || strings.HasPrefix(rel, CADir)):
			return nil
		case e.IsDir():
			return filepath.SkipDir
		case rel == TokenFile || rel == nodePasswordsFile || rel == ReportKeyFile || strings.HasPrefix(rel, CADir+"/") || strings.HasSuffix(rel, ".kubeconfig"):
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	return names, nil
}

// sameStateFiles refuses shards that do not hold the same secret files.
func sameStateFiles(shards []string) error {
	var first []string
	for i, shard := range shards {
		names, err := stateFiles(shard)
		if err != nil {
			return err
		}
		names = slices.DeleteFunc(names, renewable)
		if i == 0 {
			first = names
			continue
		}
		for _, pair := range [][2][]string{{first, names}, {names, first}} {
			for _, rel := range pair[0] {
				if !slices.Contains(pair[1], rel) {
					has, lacks := shards[0], shard
					if !slices.Contains(first, rel) {
						has, lacks = shard, shards[0]
					}
					return fmt.Errorf("merge: %s holds %s and %s does not: the shards were not made from one directory's secrets (pibake init, then a copy for every shard)", has, rel, lacks)
				}
			}
		}
	}
	return nil
}

// renewable says whether a state file is one a run may make anew without
// changing the cluster: the admin's certificate and kubeconfig.
func renewable(rel string) bool {
	return strings.HasSuffix(rel, ".kubeconfig") || strings.HasPrefix(rel, CADir+"/admin.")
}

// Import publishes a node's files from another output directory (a
// shard), as a build would: under temporary names (hard links where the
// file system allows, else copies), each checked against the shard's
// checksum, then renamed into place as one unit.
func (d *Dir) Import(ctx context.Context, shard string, n Node) error {
	var err error
	var parts []*Part
	for _, f := range []struct{ name, want string }{{n.File, n.SHA256}, {n.Bmap, n.BmapSHA256}, {n.XZ, n.XZSHA256}, {n.SBOM, n.SBOMSHA256}} {
		if f.name == "" {
			continue
		}
		p := d.NewPart(f.name)
		parts = append(parts, p)
		src := filepath.Join(shard, f.name)
		if err := p.linkOrCopy(src); err != nil {
			discard(parts)
			return fmt.Errorf("merge %s: %w", n.Hostname, DescribeWriteError(d.dir, err))
		}
		if p.SHA256, _, err = files.SHA256(ctx, p.Path()); err != nil {
			discard(parts)
			return fmt.Errorf("merge %s: %w", n.Hostname, err)
		}
		if f.want != "" && p.SHA256 != f.want {
			discard(parts)
			return fmt.Errorf("merge %s: %s has sha256 %s, but the shard's manifest says %s; the shard directory is damaged: build the shard again", n.Hostname, src, p.SHA256, f.want)
		}
	}
	return d.Publish(n, parts...)
}

// linkOrCopy makes the part a hard link to src, or a copy keeping holes
// (across file systems), synced.
func (p *Part) linkOrCopy(src string) error {
	if err := p.Discard(); err != nil {
		return err
	}
	if err := p.d.fs.Link(src, p.Path()); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := p.Create()
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, e := range sparse.Extents(in, 0, fi.Size()) {
		if err = sparse.CopyAt(out, in, e[0], e[1]-e[0], 0, buf); err != nil {
			break
		}
	}
	if err == nil {
		err = out.Truncate(fi.Size())
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
