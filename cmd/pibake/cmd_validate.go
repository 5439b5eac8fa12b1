package main

import (
	"context"
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/recipes"
	"github.com/spf13/pflag"
)

var validateCommand = command{
	summary: "check a recipe and report every problem with its file:line:column",
	usage:   "RECIPE",
	flags:   withOptions(runValidate),
}

// validateOptions are pibake validate's flags: none.
type validateOptions struct{}

func (o *validateOptions) addFlags(*pflag.FlagSet) {}

func runValidate(_ context.Context, _ *validateOptions, args []string, out outputs) int {
	if len(args) != 1 {
		return usageError(out, "validate", "want exactly one recipe (a .hcl file or a directory of them), got %d arguments", len(args))
	}
	r, diags := loadRecipe(out, args[0])
	if r == nil {
		return exitFailure
	}
	_, warnings := countDiagnostics(diags)
	summary := "valid"
	if warnings > 0 {
		summary += ", " + recipes.Plural(warnings, "warning")
	}
	fmt.Fprintf(out.stdout, "%s: %s, %s\n", args[0], describeNodes(r), summary)
	if r.Cluster.Token == "" {
		fmt.Fprintln(out.stderr, "note: the recipe sets no cluster token; pibake build generates one and keeps it in the output directory (.pibake/token).")
	}
	return exitOK
}

// loadRecipe loads and validates a recipe and renders its diagnostics.
// The recipe is nil when it is invalid.
func loadRecipe(out outputs, path string) (*recipes.Recipe, hcl.Diagnostics) {
	p := hclparse.NewParser() // one parser, so diagnostics can quote any file
	r, diags := recipes.Load(p, path)
	writeDiagnostics(out, p, diags)
	if diags.HasErrors() {
		errs, warnings := countDiagnostics(diags)
		fmt.Fprintf(out.stderr, "%s: invalid: %s, %s\n", path, recipes.Plural(errs, "error"), recipes.Plural(warnings, "warning"))
		return nil, diags
	}
	return r, diags
}

func describeNodes(r *recipes.Recipe) string {
	return fmt.Sprintf("%s (%s, %s)", recipes.Plural(len(r.Nodes), "node"), recipes.Plural(r.Servers(), "server"), recipes.Plural(r.Agents(), "agent"))
}
