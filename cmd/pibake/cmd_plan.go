package main

import (
	"context"
	"fmt"

	"github.com/pibake/pibake/builder/inputs"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/recipes"
	"github.com/spf13/pflag"
)

var planCommand = command{
	summary: "show every node a recipe resolves to, with secrets redacted",
	usage:   "RECIPE",
	flags:   withOptions(runPlan),
}

// planOptions are pibake plan's flags.
type planOptions struct {
	json bool
	out  string
}

func (o *planOptions) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.json, "json", false, "print the plan as JSON")
	fs.StringVarP(&o.out, "out", "o", "", "output directory whose generated CA the plan shows (default: the recipe's output.dir, else ./out)")
}

func runPlan(_ context.Context, o *planOptions, args []string, out outputs) int {
	if len(args) != 1 {
		return usageError(out, "plan", "want exactly one recipe (a .hcl file or a directory of them), got %d arguments", len(args))
	}
	r, _ := loadRecipe(out, args[0])
	if r == nil {
		return exitFailure
	}
	plan := recipes.NewPlan(r)
	if r.Cluster.CA == recipes.CAGenerate {
		plan.Cluster.CAHash = outdir.ReadCAHash(inputs.OutDir(r, o.out))
	}
	write := plan.WriteText
	if o.json {
		write = plan.WriteJSON
	}
	if err := write(out.stdout); err != nil {
		fmt.Fprintf(out.stderr, "pibake plan: write plan: %v\n", err)
		return exitFailure
	}
	return exitOK
}
