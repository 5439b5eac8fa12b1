package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/pibake/pibake/builder/inputs"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/builder/outdir/seam"
	"github.com/pibake/pibake/builder/sign"
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

// Has reports whether the shard builds the recipe's i-th node (0-based);
// the zero Shard builds every node.
func (sh Shard) Has(i int) bool { return sh.Count == 0 || i%sh.Count == sh.Index-1 }

// ErrNeedsInit is returned when a shard would have to make a cluster
// secret: every shard must use the same ones.
var ErrNeedsInit = errors.New("a shard does not make cluster secrets")

// CheckShardSecrets refuses a shard build that would make a secret of its
// own in d: a token, a CA, a report key, a new cluster, a node password
// rotation (which the merge would keep in one shard's record only).
func CheckShardSecrets(r *recipes.Recipe, d *outdir.Dir, newCluster bool, rotate []string) error {
	init := fmt.Sprintf("run pibake init %s --out DIR once, and build every shard in a copy of DIR (its .pibake folder holds them)", r.Path)
	switch {
	case newCluster:
		return fmt.Errorf("%w: --new-cluster with --shard would give each shard its own cluster; %s", ErrNeedsInit, init)
	case len(rotate) > 0:
		return fmt.Errorf("%w: --rotate-node-password with --shard would be recorded in one shard only, and lost when the shards are merged; rotate in DIR before the shards copy it: pibake init %s --out DIR --rotate-node-password %s", ErrNeedsInit, r.Path, rotate[0])
	case r.Cluster.Token == "" && !d.HasToken():
		return fmt.Errorf("%w: the recipe sets no token and %s has none; %s", ErrNeedsInit, d.File(outdir.TokenFile), init)
	case reports(r) && !d.HasReportKey():
		return fmt.Errorf("%w: a node reports its first boot and %s has no report key; %s", ErrNeedsInit, d.File(outdir.ReportKeyFile), init)
	case r.Cluster.CA == recipes.CAGenerate && !d.HasCA():
		return fmt.Errorf("%w: ca = \"generate\" and %s has no CA; %s", ErrNeedsInit, d.File(outdir.CADir), init)
	}
	return nil
}

// reports says whether a node of r reports its first boot.
func reports(r *recipes.Recipe) bool {
	return slices.ContainsFunc(r.Nodes, func(n recipes.Node) bool { return n.ReportURL != "" })
}

// InitOptions configure Init: the output directory, Version, Logf and
// RotateNodePassword of Options are used.
type InitOptions struct {
	inputs.Options
	// Wait queues behind a run holding the directory.
	Wait bool
}

// Init makes the cluster's secrets in an output directory, for shards to
// share: the token when the recipe sets none, the CA with ca = "generate"
// (and its admin kubeconfig), the report key when a node reports, and a
// manifest naming them, without building a node.
func Init(ctx context.Context, r *recipes.Recipe, opt InitOptions) error {
	nodes, err := Select(r, nil, Shard{})
	if err != nil {
		return err
	}
	if err := CheckRotations(r, nodes, opt.RotateNodePassword); err != nil {
		return err
	}
	s, err := inputs.Prepare(r, opt.Options, nodes)
	if err != nil {
		return err
	}
	d, err := outdir.Open(ctx, s.OutDir, outdir.Options{Wait: opt.Wait, Logf: s.Logf})
	if err != nil {
		return err
	}
	defer d.Close()
	if err := s.SettleIdentity(d); err != nil {
		return err
	}
	return d.Update(s.RecordRun)
}

// MergeOptions configure Merge.
type MergeOptions struct {
	Logf func(format string, args ...any)
	// SignKey, when set, signs SHA256SUMS and provenance.json once the
	// merge is done (outdir.Dir.Sign), as builder.Options.SignKey does;
	// Prompt asks for its passphrase (nil: sign.TerminalPrompt).
	SignKey string
	Prompt  sign.Prompt
	// FS is where the merged directory's steps go (a test stops them);
	// nil is the running system's.
	FS seam.FS
}

// Merge puts shard output directories together into dir: every node's
// files (hard-linked where the file system allows, else copied, and
// checked against the shard's checksums either way), the cluster's
// secrets, and one manifest, SHA256SUMS and os_list.json for all. The
// shards must come from one recipe, one base image, one pibake and one
// set of secrets, and no node may be in two of them.
func Merge(ctx context.Context, dir string, shards []string, opt MergeOptions) error {
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	ms, err := readShards(shards)
	if err != nil {
		return err
	}
	signer, err := LoadSigner(opt.SignKey, opt.Prompt)
	if err != nil {
		return err
	}
	defer signer.Close()
	d, err := outdir.Open(ctx, dir, outdir.Options{Logf: opt.Logf, FS: opt.FS})
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.ImportSecrets(shards); err != nil {
		return err
	}
	for i, m := range ms {
		for _, n := range m.Nodes {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := d.Import(ctx, shards[i], n); err != nil {
				return err
			}
			opt.Logf("%s: merged from %s", n.Hostname, shards[i])
		}
	}
	first := ms[0]
	if err := d.Update(func(m *outdir.Manifest) {
		nodes, records := m.Nodes, m.Records
		*m = first
		m.Nodes, m.Records = nodes, records
	}); err != nil {
		return err
	}
	return finishMerge(ctx, d, shards, ms, signer, opt.Logf)
}

// finishMerge writes the merged records and, with a key, signs them.
func finishMerge(ctx context.Context, d *outdir.Dir, shards []string, ms []outdir.Manifest, signer *sign.Signer, logf func(string, ...any)) error {
	if err := mergeRecords(ctx, d, shards, ms); err != nil {
		return err
	}
	if signer == nil {
		return nil
	}
	if err := d.Sign(signer.Bytes); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	logf("signed SHA256SUMS and %s", outdir.ProvenanceFile)
	return nil
}

// readShards reads the shards' manifests and checks that they are of one
// recipe, base, pibake and set of secrets, and that no node is in two.
func readShards(shards []string) ([]outdir.Manifest, error) {
	if len(shards) == 0 {
		return nil, errors.New("merge: no shard directories")
	}
	ms := make([]outdir.Manifest, len(shards))
	for i, s := range shards {
		ms[i] = outdir.ReadManifest(s)
		if ms[i].Cluster == "" {
			return nil, fmt.Errorf("merge: %s holds no pibake manifest.json", s)
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
				return nil, fmt.Errorf("merge: %s and %s were built with another %s; build every shard from one recipe, in copies of one pibake init directory", shards[0], shards[i], d.what)
			}
		}
		for _, n := range m.Nodes {
			if prev, ok := from[n.Hostname]; ok {
				return nil, fmt.Errorf("merge: node %s is in %s and in %s; each node belongs to one shard", n.Hostname, prev, shards[i])
			}
			from[n.Hostname] = shards[i]
		}
	}
	return ms, nil
}
