package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/internal/summary"
	"github.com/spf13/pflag"
)

var buildCommand = command{
	summary: "write one ready-to-flash image per node of a recipe",
	usage:   "RECIPE",
	flags:   withOptions(runBuild),
}

// buildOptions are pibake build's flags.
type buildOptions struct {
	base                                     baseFlags
	lock                                     lockFlags
	out, image, shard, signKey               string
	nodes, rotate                            []string
	compress, force, wait, prune, newCluster bool
	updateLock                               bool
}

func (o *buildOptions) addFlags(fs *pflag.FlagSet) {
	o.base.add(fs)
	fs.StringVarP(&o.out, "out", "o", "", "output directory (default: the recipe's output.dir, else ./out)")
	fs.StringArrayVar(&o.nodes, "node", nil, "build only this node, or every node of this node block's label (repeatable)")
	fs.StringVar(&o.image, "image", "", "base image source instead of the recipe's (alias, URL or .img/.img.xz path)")
	fs.BoolVar(&o.compress, "compress", false, "also write <host>.img.xz")
	fs.BoolVar(&o.force, "force", false, "rebuild nodes whose inputs did not change")
	fs.BoolVar(&o.wait, "wait", false, "wait for another build writing the output directory instead of failing at once")
	fs.BoolVar(&o.prune, "prune", false, "delete the images of nodes that are no longer in the recipe")
	fs.BoolVar(&o.newCluster, "new-cluster", false, "make a new cluster token (and CA) although the output directory holds images built with others (every node is rebuilt)")
	fs.StringVar(&o.shard, "shard", "", "build only shard I of N (I/N: every N-th node of the recipe), in a copy of a pibake init directory")
	fs.BoolVar(&o.updateLock, "update-lock", false, "resolve the recipe's moving inputs again and rewrite its lock file before building")
	o.lock.add(fs)
	fs.StringVar(&o.signKey, "sign-key", "", "sign SHA256SUMS and provenance.json at the end with this OpenSSH private key (its passphrase asked on the terminal), or the .pub of a key in ssh-agent")
	fs.StringArrayVar(&o.rotate, "rotate-node-password", nil, "give this node a new node password, e.g. after its card was lost (repeatable; then kubectl delete node NODE before it boots)")
}

func runBuild(ctx context.Context, o *buildOptions, args []string, out outputs) int {
	if msg := o.base.usage(); msg != "" {
		return usageError(out, "build", "%s", msg)
	}
	if len(args) != 1 {
		return usageError(out, "build", "want exactly one recipe (a .hcl file or a directory of them), got %d arguments", len(args))
	}
	var sh fleet.Shard
	if o.shard != "" {
		var err error
		if sh, err = fleet.ParseShard(o.shard); err != nil {
			return usageError(out, "build", "%v", err)
		}
	}
	r, _ := loadRecipe(out, args[0])
	if r == nil {
		return exitFailure
	}
	lock, err := applyLock(ctx, r, o.updateLock, &o.lock, &o.base, out)
	if err != nil {
		reportError(out, "build", err)
		return exitFailure
	}
	bopt, err := o.base.options(out)
	if err != nil {
		fmt.Fprintf(out.stderr, "pibake build: %v\n", err)
		return exitFailure
	}
	defer o.base.done()
	results, err := builder.Build(ctx, r, builder.Options{
		OutDir: o.out, Nodes: o.nodes, Jobs: o.base.jobs, Base: bopt, Image: o.image,
		Compress: o.compress, Force: o.force, Wait: o.wait, Prune: o.prune, NewCluster: o.newCluster,
		RotateNodePassword: o.rotate, Shard: sh, Version: fullVersion(), Logf: bopt.Logf, Progress: bopt.Progress, Lock: lock, SignKey: o.signKey,
	})
	o.base.done() // the summary below the bars
	if !o.base.quiet && len(results) > 0 {
		summary.BuildTable(out.stderr, results)
	}
	summary.BuildPaths(out.stdout, results)
	switch {
	case errors.Is(err, fleet.ErrUnknownNode), errors.Is(err, fleet.ErrNotSelected), errors.Is(err, fleet.ErrShardSigns):
		fmt.Fprintf(out.stderr, "pibake build: %v\n", err)
		return exitUsage
	case err != nil:
		reportError(out, "build", err)
		return exitFailure
	}
	return exitOK
}
