package main

import (
	"context"
	"fmt"

	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/recipes"
	"github.com/spf13/pflag"
)

var planCommand = command{
	summary: "show every node a recipe resolves to, with secrets redacted",
	usage:   "RECIPE",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		asJSON := fs.Bool("json", false, "print the plan as JSON")
		outDir := fs.StringP("out", "o", "", "output directory whose generated CA the plan shows (default: the recipe's output.dir, else ./out)")
		return func(_ context.Context, args []string, out outputs) int {
			if len(args) != 1 {
				return usageError(out, "plan", "want exactly one recipe (a .hcl file or a directory of them), got %d arguments", len(args))
			}
			r, _ := loadRecipe(out, args[0])
			if r == nil {
				return exitFailure
			}
			plan := recipes.NewPlan(r)
			if r.Cluster.CA == recipes.CAGenerate {
				dir := *outDir
				if dir == "" {
					dir = r.Output.Dir
				}
				if dir == "" {
					dir = "out"
				}
				plan.Cluster.CAHash = builder.ReadCAHash(dir)
			}
			write := plan.WriteText
			if *asJSON {
				write = plan.WriteJSON
			}
			if err := write(out.stdout); err != nil {
				fmt.Fprintf(out.stderr, "pibake plan: write plan: %v\n", err)
				return exitFailure
			}
			return exitOK
		}
	},
}
