package main

import (
	"context"
	"fmt"

	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/builder/inputs"
	"github.com/spf13/pflag"
)

var initCommand = command{
	summary: "make a cluster's secrets (token, CA) once, for sharded builds to share",
	usage:   "RECIPE",
	flags:   withOptions(runInit),
}

// initOptions are pibake init's flags.
type initOptions struct {
	out    string
	rotate []string
	quiet  bool
}

func (o *initOptions) addFlags(fs *pflag.FlagSet) {
	fs.BoolVarP(&o.quiet, "quiet", "q", false, "print no progress")
	fs.StringVarP(&o.out, "out", "o", "", "output directory (default: the recipe's output.dir, else ./out)")
	fs.StringArrayVar(&o.rotate, "rotate-node-password", nil, "give this node a new node password before the shards copy DIR (repeatable; then kubectl delete node NODE before it boots)")
}

func runInit(ctx context.Context, o *initOptions, args []string, out outputs) int {
	if len(args) != 1 {
		return usageError(out, "init", "want exactly one recipe, got %d arguments", len(args))
	}
	r, _ := loadRecipe(out, args[0])
	if r == nil {
		return exitFailure
	}
	opt := inputs.Options{OutDir: o.out, Version: fullVersion(), Logf: quietLogf(out, o.quiet), RotateNodePassword: o.rotate}
	if err := fleet.Init(ctx, r, fleet.InitOptions{Options: opt}); err != nil {
		reportError(out, "init", err)
		return exitFailure
	}
	fmt.Fprintln(out.stdout, inputs.OutDir(r, o.out))
	return exitOK
}

var mergeCommand = command{
	summary: "put the output directories of sharded builds together",
	usage:   "--out DIR SHARD_DIR...",
	flags:   withOptions(runMerge),
}

// mergeOptions are pibake merge's flags.
type mergeOptions struct {
	out, signKey        string
	allowPartial, quiet bool
}

func (o *mergeOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.out, "out", "o", "", "the merged output directory (required)")
	fs.BoolVar(&o.allowPartial, "allow-partial", false, "merge although a shard or a shard's node is missing (warns, naming them); without it such a merge is refused")
	fs.BoolVarP(&o.quiet, "quiet", "q", false, "print no progress (warnings still)")
	fs.StringVar(&o.signKey, "sign-key", "", "sign SHA256SUMS and provenance.json once merged with this OpenSSH private key (its passphrase asked on the terminal), or the .pub of a key in ssh-agent")
}

func runMerge(ctx context.Context, o *mergeOptions, args []string, out outputs) int {
	if o.out == "" || len(args) == 0 {
		return usageError(out, "merge", "want --out DIR and at least one shard directory")
	}
	mopt := fleet.MergeOptions{Logf: quietLogf(out, o.quiet), AllowPartial: o.allowPartial, SignKey: o.signKey}
	if err := fleet.Merge(ctx, o.out, args, mopt); err != nil {
		reportError(out, "merge", err)
		return exitFailure
	}
	fmt.Fprintln(out.stdout, o.out)
	return exitOK
}
