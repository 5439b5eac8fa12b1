package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pibake/pibake/internal/atomicfile"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/sparse"
	"github.com/pibake/pibake/recipes"
)

// A fleet too large for one CI runner is built in shards: `pibake init`
// makes the cluster's secrets once, every runner builds its shard
// (`build --shard I/N`) in a copy of that directory, and `pibake merge`
// puts the shards together, checking that they are of one recipe and one
// set of secrets.

// Shard selects every Count-th node of the recipe, from the Index-th
// (1-based): the same split on every machine, and balanced, since the
// recipe's order interleaves servers and agents the same way for all.
type Shard struct{ Index, Count int }

// ParseShard reads "I/N".
func ParseShard(s string) (Shard, error) {
	var sh Shard
	if _, err := fmt.Sscanf(s, "%d/%d", &sh.Index, &sh.Count); err != nil || fmt.Sprintf("%d/%d", sh.Index, sh.Count) != s {
		return Shard{}, fmt.Errorf("--shard %q: want I/N, such as 2/4", s)
	}
	if sh.Count < 1 || sh.Index < 1 || sh.Index > sh.Count {
		return Shard{}, fmt.Errorf("--shard %s: I must be from 1 to N", s)
	}
	return sh, nil
}

// has reports whether the shard builds the recipe's i-th node (0-based).
func (sh Shard) has(i int) bool { return sh.Count == 0 || i%sh.Count == sh.Index-1 }

// ErrNeedsInit is returned when a shard would have to make a cluster
// secret: every shard must use the same ones.
var ErrNeedsInit = errors.New("a shard does not make cluster secrets")

// checkShardSecrets refuses a shard build that would make a secret of its
// own: a token, a CA, a new cluster.
func (b *build) checkShardSecrets(out *output) error {
	if b.opt.Shard.Count == 0 {
		return nil
	}
	init := fmt.Sprintf("run pibake init %s --out DIR once, and build every shard in a copy of DIR (its .pibake folder holds them)", b.r.Path)
	switch {
	case b.opt.NewCluster:
		return fmt.Errorf("%w: --new-cluster with --shard would give each shard its own cluster; %s", ErrNeedsInit, init)
	case len(b.opt.RotateNodePassword) > 0:
		return fmt.Errorf("%w: --rotate-node-password with --shard would be recorded in one shard only, and lost when the shards are merged; rotate in DIR before the shards copy it: pibake init %s --out DIR --rotate-node-password %s", ErrNeedsInit, b.r.Path, b.opt.RotateNodePassword[0])
	case b.r.Cluster.Token == "" && !files.Exists(out.path(TokenFile)):
		return fmt.Errorf("%w: the recipe sets no token and %s has none; %s", ErrNeedsInit, out.path(TokenFile), init)
	case reports(b.r) && !files.Exists(out.path(ReportKeyFile)):
		return fmt.Errorf("%w: a node reports its first boot and %s has no report key; %s", ErrNeedsInit, out.path(ReportKeyFile), init)
	case b.r.Cluster.CA == recipes.CAGenerate && !files.Exists(out.path(CADir)):
		return fmt.Errorf("%w: ca = \"generate\" and %s has no CA; %s", ErrNeedsInit, out.path(CADir), init)
	}
	return nil
}

// Init makes the cluster's secrets in an output directory, for shards to
// share: the token when the recipe sets none, the CA with ca = "generate"
// (and its admin kubeconfig), and a manifest naming them, without building
// a node.
func Init(ctx context.Context, r *recipes.Recipe, opt Options) error {
	opt.Shard = Shard{}
	b, err := prepare(r, opt)
	if err != nil {
		return err
	}
	out, err := openOutput(ctx, b.outDir, opt.Wait, b.logf)
	if err != nil {
		return err
	}
	defer out.close()
	if err := b.identity(out); err != nil {
		return err
	}
	return out.update(func(m *manifest) {
		m.PibakeVersion, m.Cluster, m.RecipeHash = opt.Version, r.Cluster.Name, b.recipeHash()
		b.recordIdentity(m)
	})
}

// recordIdentity notes in the manifest where the token comes from and
// which CA the nodes pin.
func (b *build) recordIdentity(m *manifest) {
	m.CAHash = ""
	if b.ca != nil {
		m.CAHash = b.ca.Hash()
	}
	m.Token, m.TokenID = b.tokenSource, ""
	if b.tokenSource == "generated" {
		m.TokenID = tokenID(b.token)
	}
}

// Merge puts shard output directories together into dir: every node's
// files (hard-linked where the file system allows, else copied, and
// checked against the shard's checksums either way), the cluster's
// secrets, and one manifest, SHA256SUMS and os_list.json for all. The
// shards must come from one recipe, one base image, one pibake and one
// set of secrets, and no node may be in two of them.
func Merge(ctx context.Context, dir string, shards []string, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if len(shards) == 0 {
		return errors.New("merge: no shard directories")
	}
	ms := make([]manifest, len(shards))
	for i, s := range shards {
		ms[i] = readManifest(s)
		if ms[i].Cluster == "" {
			return fmt.Errorf("merge: %s holds no pibake manifest.json", s)
		}
	}
	first := ms[0]
	from := map[string]string{}
	for i, m := range ms {
		// The recipe's hash covers the secrets too: the more telling
		// differences come first.
		for _, d := range []struct{ what, a, b string }{
			{"cluster", first.Cluster, m.Cluster}, {"cluster token", first.TokenID + first.Token, m.TokenID + m.Token},
			{"cluster CA", first.CAHash, m.CAHash}, {"pibake version", first.PibakeVersion, m.PibakeVersion},
			{"base image", first.Base.SHA256, m.Base.SHA256}, {"recipe", first.RecipeHash, m.RecipeHash},
		} {
			if d.a != d.b {
				return fmt.Errorf("merge: %s and %s were built with another %s; build every shard from one recipe, in copies of one pibake init directory", shards[0], shards[i], d.what)
			}
		}
		for _, n := range m.Nodes {
			if prev, ok := from[n.Hostname]; ok {
				return fmt.Errorf("merge: node %s is in %s and in %s; each node belongs to one shard", n.Hostname, prev, shards[i])
			}
			from[n.Hostname] = shards[i]
		}
	}
	out, err := openOutput(ctx, dir, false, logf)
	if err != nil {
		return err
	}
	defer out.close()
	if err := sameStateFiles(shards); err != nil {
		return err
	}
	for _, shard := range shards {
		if err := mergeState(shard, dir); err != nil {
			return err
		}
	}
	for i, m := range ms {
		for _, n := range m.Nodes {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := mergeNode(ctx, out, shards[i], n); err != nil {
				return err
			}
			logf("%s: merged from %s", n.Hostname, shards[i])
		}
	}
	return out.update(func(m *manifest) {
		nodes := m.Nodes
		*m = first
		m.Nodes = nodes
	})
}

// mergeNode publishes one node's files from a shard, as a build would:
// under temporary names, checked, then renamed into place as one unit.
func mergeNode(ctx context.Context, out *output, shard string, n manifestNode) error {
	pub := publication{Entry: n, Parts: map[string]part{}}
	defer func() {
		for _, pt := range pub.Parts {
			os.Remove(out.path(pt.Temp))
		}
	}()
	for name, want := range map[string]string{n.File: n.SHA256, n.Bmap: "", n.XZ: n.XZSHA256} {
		if name == "" {
			continue
		}
		tmp := name + ".part"
		pub.Parts[name] = part{Temp: tmp}
		if err := linkOrCopy(filepath.Join(shard, name), out.path(tmp)); err != nil {
			return fmt.Errorf("merge %s: %w", n.Hostname, describeWriteError(out.dir, err))
		}
		sum, _, err := files.SHA256(ctx, out.path(tmp))
		if err != nil {
			return fmt.Errorf("merge %s: %w", n.Hostname, err)
		}
		if want != "" && sum != want {
			return fmt.Errorf("merge %s: %s has sha256 %s, but the shard's manifest says %s; the shard directory is damaged: build the shard again", n.Hostname, filepath.Join(shard, name), sum, want)
		}
		pub.Parts[name] = part{Temp: tmp, SHA256: sum}
	}
	return out.publish(pub)
}

// mergeState copies the cluster's secrets (token, CA, node password
// generations) and the admin kubeconfig from a shard into dir, where dir
// has none of them yet; where it has, the secrets must be the same (every
// shard is checked so). The admin certificate and kubeconfig may differ:
// a shard renews them when they near their end; the first shard's stay.
func mergeState(shard, dir string) error {
	files, err := stateFiles(shard)
	if err != nil {
		return err
	}
	for _, rel := range files {
		src, dst := filepath.Join(shard, filepath.FromSlash(rel)), filepath.Join(dir, filepath.FromSlash(rel))
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		if have, err := os.ReadFile(dst); err == nil {
			if string(have) != string(data) && !renewable(rel) {
				return fmt.Errorf("merge: %s differs from %s: the shards were not made from this directory's secrets", dst, src)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		if err := atomicfile.WriteFile(dst, data, 0o600); err != nil {
			return fmt.Errorf("merge: %w", err)
		}
	}
	return nil
}

// stateFiles lists the cluster state a shard holds (see mergeState), as
// slash-separated paths relative to it.
func stateFiles(shard string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(shard, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(shard, p)
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir() && (rel == "." || rel == stateDir || strings.HasPrefix(rel, CADir)):
			return nil
		case d.IsDir():
			return filepath.SkipDir
		case rel == TokenFile || rel == nodePasswordsFile || rel == ReportKeyFile || strings.HasPrefix(rel, CADir+"/") || strings.HasSuffix(rel, ".kubeconfig"):
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	return files, nil
}

// sameStateFiles refuses shards that do not hold the same secret files:
// one with a token, a CA or node password generations that another lacks
// was not made from the same directory.
func sameStateFiles(shards []string) error {
	var first []string
	for i, shard := range shards {
		files, err := stateFiles(shard)
		if err != nil {
			return err
		}
		files = slices.DeleteFunc(files, renewable)
		if i == 0 {
			first = files
			continue
		}
		for _, pair := range [][2][]string{{first, files}, {files, first}} {
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

// renewable says whether a state file is one a build may make anew
// without changing the cluster: the admin's certificate and kubeconfig.
func renewable(rel string) bool {
	return strings.HasSuffix(rel, ".kubeconfig") || strings.HasPrefix(rel, CADir+"/admin.")
}

// linkOrCopy makes dst a hard link to src, or a copy keeping holes
// (across file systems), synced.
func linkOrCopy(src, dst string) error {
	os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := sparse.CopyFile(dst, src, 0, fi.Size()); err != nil {
		return err
	}
	return atomicfile.Sync(dst)
}
