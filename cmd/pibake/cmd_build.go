package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/internal/bytesize"
	"github.com/spf13/pflag"
)

var buildCommand = command{
	summary: "write one ready-to-flash image per node of a recipe",
	usage:   "RECIPE",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		var bf baseFlags
		bf.add(fs)
		out := fs.StringP("out", "o", "", "output directory (default: the recipe's output.dir, else ./out)")
		nodes := fs.StringArray("node", nil, "build only this node, or every node of this node block's label (repeatable)")
		image := fs.String("image", "", "base image source instead of the recipe's (alias, URL or .img/.img.xz path)")
		compress := fs.Bool("compress", false, "also write <host>.img.xz")
		force := fs.Bool("force", false, "rebuild nodes whose inputs did not change")
		wait := fs.Bool("wait", false, "wait for another build writing the output directory instead of failing at once")
		prune := fs.Bool("prune", false, "delete the images of nodes that are no longer in the recipe")
		newCluster := fs.Bool("new-cluster", false, "make a new cluster token (and CA) although the output directory holds images built with others (every node is rebuilt)")
		shard := fs.String("shard", "", "build only shard I of N (I/N: every N-th node of the recipe), in a copy of a pibake init directory")
		updateLock := fs.Bool("update-lock", false, "resolve the recipe's moving inputs again and rewrite its lock file before building")
		var lf lockFlags
		lf.add(fs)
		rotate := fs.StringArray("rotate-node-password", nil, "give this node a new node password, e.g. after its card was lost (repeatable; then kubectl delete node NODE before it boots)")
		return func(ctx context.Context, args []string, o outputs) int {
			if msg := bf.usage(); msg != "" {
				return usageError(o, "build", "%s", msg)
			}
			if len(args) != 1 {
				return usageError(o, "build", "want exactly one recipe (a .hcl file or a directory of them), got %d arguments", len(args))
			}
			var sh builder.Shard
			if *shard != "" {
				var err error
				if sh, err = builder.ParseShard(*shard); err != nil {
					return usageError(o, "build", "%v", err)
				}
			}
			r, _ := loadRecipe(o, args[0])
			if r == nil {
				return exitFailure
			}
			if err := applyLock(ctx, r, *updateLock, &lf, &bf, o); err != nil {
				reportError(o, "build", err)
				return exitFailure
			}
			bopt, err := bf.options(o)
			if err != nil {
				fmt.Fprintf(o.stderr, "pibake build: %v\n", err)
				return exitFailure
			}
			defer bf.done()
			opt := builder.Options{
				OutDir: *out, Nodes: *nodes, Jobs: bf.jobs, Base: bopt, Image: *image,
				Compress: *compress, Force: *force, Wait: *wait, Prune: *prune, NewCluster: *newCluster,
				RotateNodePassword: *rotate, Shard: sh, Version: fullVersion(), Logf: bopt.Logf, Progress: bopt.Progress,
			}
			results, err := builder.Build(ctx, r, opt)
			bf.done() // the summary below the bars
			if !bf.quiet && len(results) > 0 {
				writeBuildTable(o, results)
			}
			for _, res := range results {
				if res.Status != builder.StatusBuilt && res.Status != builder.StatusUnchanged {
					continue
				}
				fmt.Fprintln(o.stdout, res.File)
				if res.XZ != "" {
					fmt.Fprintln(o.stdout, res.XZ)
				}
			}
			switch {
			case errors.Is(err, builder.ErrUnknownNode), errors.Is(err, builder.ErrNotSelected):
				fmt.Fprintf(o.stderr, "pibake build: %v\n", err)
				return exitUsage
			case err != nil:
				reportError(o, "build", err)
				return exitFailure
			}
			return exitOK
		}
	},
}

// writeBuildTable is the summary for people, on stderr; stdout keeps one
// file path per line for scripts.
func writeBuildTable(o outputs, results []builder.NodeResult) {
	tw := tabwriter.NewWriter(o.stderr, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tROLE\tFILE\tSIZE\tSHA256\tSTATUS")
	for _, r := range results {
		sum := r.SHA256
		if len(sum) > 12 {
			sum = sum[:12] + "…"
		}
		size := "-"
		if r.Size > 0 {
			size = bytesize.MiB(r.Size)
		}
		status := r.Status
		switch r.Status {
		case builder.StatusUnchanged:
			status = "unchanged, skipped"
		case builder.StatusFailed:
			status = "FAILED: " + oneLine(r.Err)
		case builder.StatusOrphan:
			status = "not in the recipe; kept (--prune deletes it)"
		case builder.StatusPruned:
			status = "not in the recipe; deleted"
		}
		file := r.File
		if file == "" {
			file = "-"
		}
		if r.XZ != "" {
			file += " (+ .xz)"
		}
		if sum == "" {
			sum = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Hostname, r.Role, file, size, sum, status)
	}
	tw.Flush()
}

// oneLine is an error's first line.
func oneLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
