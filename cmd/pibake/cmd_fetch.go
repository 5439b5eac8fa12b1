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

// baseFlags are the flags of every command that needs the base image.
type baseFlags struct {
	cache    string
	fs       *pflag.FlagSet
	jobs     int
	insecure bool
	refresh  bool
	quiet    bool
	view     *progressView
}

func (b *baseFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&b.cache, "cache", "", "cache directory (default $XDG_CACHE_HOME/pibake)")
	fs.IntVar(&b.jobs, "jobs", 0, "parallel jobs, at least 1 (default: number of CPUs)")
	b.fs = fs
	fs.BoolVar(&b.insecure, "insecure-skip-verify", false, "allow a download with no pinned sha256 and no published .sha256")
	fs.BoolVar(&b.refresh, "refresh", false, "ask the network again for a source already in the cache")
	fs.BoolVarP(&b.quiet, "quiet", "q", false, "print no progress")
}

// usage reports a flag value no command can run with, or "".
func (b *baseFlags) usage() string {
	if b.fs.Changed("jobs") && b.jobs < 1 {
		return fmt.Sprintf("--jobs is %d; it must be at least 1", b.jobs)
	}
	return ""
}

func (b *baseFlags) options(out outputs) (base.Options, error) {
	dir := b.cache
	if dir == "" {
		d, err := base.DefaultCacheDir()
		if err != nil {
			return base.Options{}, err
		}
		dir = d
	}
	opt := base.Options{Cache: base.Cache{Dir: dir}, Jobs: b.jobs, InsecureSkipVerify: b.insecure, Refresh: b.refresh}
	if !b.quiet && b.view == nil {
		b.view = newProgressView(out)
	}
	if b.view != nil {
		opt.Logf, opt.Progress = b.view.logf, b.view.report
	}
	return opt, nil
}

// done ends the progress display, if any.
func (b *baseFlags) done() {
	if b.view != nil {
		b.view.stop()
	}
}

// logf is where a command's own progress lines go: above the bars when
// they are shown, else straight to stderr.
func (b *baseFlags) logf(out outputs) func(string, ...any) {
	if b.view != nil {
		return b.view.logf
	}
	return logf(out)
}

// logf writes progress lines to stderr.
func logf(out outputs) func(string, ...any) {
	return func(format string, args ...any) {
		fmt.Fprintf(out.stderr, "pibake: "+format+"\n", args...)
	}
}

var fetchCommand = command{
	summary: "download, verify, cache and decompress a base image, and print its path",
	usage:   "[RECIPE | SOURCE]",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		var bf baseFlags
		bf.add(fs)
		return func(ctx context.Context, args []string, out outputs) int {
			if msg := bf.usage(); msg != "" {
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
			opt, err := bf.options(out)
			if err != nil {
				fmt.Fprintf(out.stderr, "pibake fetch: %v\n", err)
				return exitFailure
			}
			defer bf.done()
			img, err := base.Fetch(ctx, src, opt)
			if err != nil {
				reportError(out, "fetch", err)
				return exitFailure
			}
			fmt.Fprintln(out.stdout, img.Path)
			return exitOK
		}
	},
}

// isRecipe tells a recipe (a .hcl file or a directory) from an image source.
func isRecipe(arg string) bool {
	if strings.HasSuffix(arg, ".hcl") {
		return true
	}
	fi, err := os.Stat(arg)
	return err == nil && fi.IsDir()
}
