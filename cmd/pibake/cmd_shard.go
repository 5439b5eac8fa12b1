package main

import (
	"context"
	"fmt"

	"github.com/pibake/pibake/builder"
	"github.com/spf13/pflag"
)

var initCommand = command{
	summary: "make a cluster's secrets (token, CA) once, for sharded builds to share",
	usage:   "RECIPE",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		out := fs.StringP("out", "o", "", "output directory (default: the recipe's output.dir, else ./out)")
		rotate := fs.StringArray("rotate-node-password", nil, "give this node a new node password before the shards copy DIR (repeatable; then kubectl delete node NODE before it boots)")
		return func(ctx context.Context, args []string, o outputs) int {
			if len(args) != 1 {
				return usageError(o, "init", "want exactly one recipe, got %d arguments", len(args))
			}
			r, _ := loadRecipe(o, args[0])
			if r == nil {
				return exitFailure
			}
			opt := builder.Options{OutDir: *out, Version: fullVersion(), Logf: logf(o), RotateNodePassword: *rotate}
			if err := builder.Init(ctx, r, opt); err != nil {
				reportError(o, "init", err)
				return exitFailure
			}
			dir := *out
			if dir == "" {
				dir = r.Output.Dir
			}
			if dir == "" {
				dir = "out"
			}
			fmt.Fprintln(o.stdout, dir)
			return exitOK
		}
	},
}

var mergeCommand = command{
	summary: "put the output directories of sharded builds together",
	usage:   "--out DIR SHARD_DIR...",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		out := fs.StringP("out", "o", "", "the merged output directory (required)")
		return func(ctx context.Context, args []string, o outputs) int {
			if *out == "" || len(args) == 0 {
				return usageError(o, "merge", "want --out DIR and at least one shard directory")
			}
			if err := builder.Merge(ctx, *out, args, logf(o)); err != nil {
				reportError(o, "merge", err)
				return exitFailure
			}
			fmt.Fprintln(o.stdout, *out)
			return exitOK
		}
	},
}
