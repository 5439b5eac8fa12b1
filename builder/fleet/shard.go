package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/pibake/pibake/builder/inputs"
	"github.com/pibake/pibake/builder/outdir"
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

// String is "I/N".
func (sh Shard) String() string { return fmt.Sprintf("%d/%d", sh.Index, sh.Count) }
