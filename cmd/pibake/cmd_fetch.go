package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/recipes"
	"github.com/spf13/pflag"
)

var fetchCommand = command{
	summary: "download, verify, cache and decompress a base image, and print its path",
	usage:   "[RECIPE | SOURCE]",
	flags:   withOptions(runFetch),
}

// fetchOptions are pibake fetch's flags.
type fetchOptions struct{ base baseFlags }

func (o *fetchOptions) addFlags(fs *pflag.FlagSet) { o.base.add(fs) }

func runFetch(ctx context.Context, o *fetchOptions, args []string, out outputs) int {
	if msg := o.base.usage(); msg != "" {
		return usageError(out, "fetch", "%s", msg)
	}
	if len(args) > 1 {
		return usageError(out, "fetch", "want at most one recipe or image source, got %d arguments", len(args))
	}
	spec, pin := recipes.DefaultImageSource, ""
	if len(args) == 1 {
		if isRecipe(args[0]) {
			r, _ := loadRecipe(out, args[0])
			if r == nil {
				return exitFailure
			}
			spec, pin = r.Image.Source, r.Image.SHA256
		} else {
			spec = args[0]
		}
	}
	src, err := base.ParseSource(spec, pin)
	if err != nil {
		fmt.Fprintf(out.stderr, "pibake fetch: %v\n", err)
		return exitFailure
	}
	opt, err := o.base.options(out)
	if err != nil {
		fmt.Fprintf(out.stderr, "pibake fetch: %v\n", err)
		return exitFailure
	}
	defer o.base.done()
	img, err := base.Fetch(ctx, src, opt)
	if err != nil {
		reportError(out, "fetch", err)
		return exitFailure
	}
	fmt.Fprintln(out.stdout, img.Path)
	return exitOK
}

// isRecipe tells a recipe (a .hcl file or a directory) from an image source.
func isRecipe(arg string) bool {
	if strings.HasSuffix(arg, ".hcl") {
		return true
	}
	fi, err := os.Stat(arg)
	return err == nil && fi.IsDir()
}
