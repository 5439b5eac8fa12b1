package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/internal/bytesize"
	"github.com/pibake/pibake/internal/summary"
	"github.com/spf13/pflag"
)

var cacheCommand = command{
	summary: "list or prune cached base images (cache list | cache prune)",
	usage:   "list | prune",
	flags:   withOptions(runCache),
}

// cacheOptions are pibake cache's flags.
type cacheOptions struct {
	fs        *pflag.FlagSet // for which flags were given
	dir       string
	json, all bool
	olderThan time.Duration
}

func (o *cacheOptions) addFlags(fs *pflag.FlagSet) {
	o.fs = fs
	fs.StringVar(&o.dir, "cache", "", "cache directory (default $XDG_CACHE_HOME/pibake)")
	fs.BoolVar(&o.json, "json", false, "list: print JSON")
	fs.BoolVar(&o.all, "all", false, "prune: remove everything")
	fs.DurationVar(&o.olderThan, "older-than", 30*24*time.Hour, "prune: remove images not used for this long")
}

func runCache(ctx context.Context, o *cacheOptions, args []string, out outputs) int {
	if code, ok := o.check(args, out); !ok {
		return code
	}
	c := base.Cache{Dir: o.dir}
	if c.Dir == "" {
		d, err := base.DefaultCacheDir()
		if err != nil {
			fmt.Fprintf(out.stderr, "pibake cache: %v\n", err)
			return exitFailure
		}
		c.Dir = d
	}
	if args[0] == "prune" {
		freed, err := c.Prune(ctx, o.olderThan, o.all, logf(out))
		if err != nil {
			fmt.Fprintf(out.stderr, "pibake cache prune: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(out.stdout, "freed %s\n", bytesize.MiB(freed))
		return exitOK
	}
	entries, err := c.List()
	if err != nil {
		fmt.Fprintf(out.stderr, "pibake cache list: %v\n", err)
		return exitFailure
	}
	summary.CacheList(out.stdout, entries, o.json)
	return exitOK
}

// check refuses a verb or flags the command cannot run with.
func (o *cacheOptions) check(args []string, out outputs) (int, bool) {
	switch {
	case len(args) != 1 || (args[0] != "list" && args[0] != "prune"):
		return usageError(out, "cache", "want list or prune"), false
	case args[0] == "list" && (o.fs.Changed("all") || o.fs.Changed("older-than")):
		return usageError(out, "cache", "--all and --older-than are for cache prune; cache list shows every image"), false
	case args[0] == "prune" && o.fs.Changed("json"):
		return usageError(out, "cache", "--json is for cache list"), false
	case o.olderThan < 0:
		return usageError(out, "cache", "--older-than %s is negative; give how long an image has not been used, such as 720h", o.olderThan), false
	case o.all && o.fs.Changed("older-than"):
		return usageError(out, "cache", "--all removes every image; --older-than is then meaningless"), false
	}
	return exitOK, true
}
