package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/pibake/pibake/builder"
	"github.com/spf13/pflag"
)

var buildCommand = command{
	summary: "write one ready-to-flash image per node of a recipe",
	usage:   "RECIPE",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		var bf baseFlags
		bf.add(fs)
		out := fs.StringP("out", "o", "", "output directory (default: the recipe's output.dir, else ./out)")
		nodes := fs.StringArray("node", nil, "build only this node (repeatable)")
		image := fs.String("image", "", "base image source instead of the recipe's (alias, URL or .img/.img.xz path)")
		compress := fs.Bool("compress", false, "also write <host>.img.xz")
		force := fs.Bool("force", false, "rebuild nodes whose inputs did not change")
		return func(ctx context.Context, args []string, o outputs) int {
			if len(args) != 1 {
				return usageError(o, "build", "want exactly one recipe (a .hcl file or a directory of them), got %d arguments", len(args))
			}
			r, _ := loadRecipe(o, args[0])
			if r == nil {
				return exitFailure
			}
			bopt, err := bf.options(o)
			if err != nil {
				fmt.Fprintf(o.stderr, "pibake build: %v\n", err)
				return exitFailure
			}
			opt := builder.Options{
				OutDir: *out, Nodes: *nodes, Jobs: bf.jobs, Base: bopt, Image: *image,
				Compress: *compress, Force: *force, Version: fullVersion(), Logf: bopt.Logf,
			}
			results, err := builder.Build(ctx, r, opt)
			if !bf.quiet && len(results) > 0 {
				writeBuildTable(o, results)
			}
			for _, res := range results {
				fmt.Fprintln(o.stdout, res.File)
			}
			switch {
			case errors.Is(err, builder.ErrUnknownNode):
				fmt.Fprintf(o.stderr, "pibake build: %v\n", err)
				return exitUsage
			case err != nil:
				fmt.Fprintf(o.stderr, "pibake build: %v\n", err)
				return exitFailure
			}
			return exitOK
		}
	},
}

// writeBuildTable is the summary for people, on stderr; stdout keeps one
// image path per line for scripts.
func writeBuildTable(o outputs, results []builder.NodeResult) {
	tw := tabwriter.NewWriter(o.stderr, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tROLE\tFILE\tSIZE\tSHA256\tSTATUS")
	for _, r := range results {
		status := "built"
		if r.Skipped {
			status = "skipped (unchanged)"
		}
		sum := r.SHA256
		if len(sum) > 12 {
			sum = sum[:12] + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f MiB\t%s\t%s\n", r.Hostname, r.Role, r.File, float64(r.Size)/(1<<20), sum, status)
	}
	tw.Flush()
}
