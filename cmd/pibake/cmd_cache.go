package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/internal/bytesize"
	"github.com/spf13/pflag"
)

var cacheCommand = command{
	summary: "list or prune cached base images (cache list | cache prune)",
	usage:   "list | prune",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		dir := fs.String("cache", "", "cache directory (default $XDG_CACHE_HOME/pibake)")
		asJSON := fs.Bool("json", false, "list: print JSON")
		all := fs.Bool("all", false, "prune: remove everything")
		olderThan := fs.Duration("older-than", 30*24*time.Hour, "prune: remove images not used for this long")
		return func(ctx context.Context, args []string, out outputs) int {
			if len(args) != 1 || (args[0] != "list" && args[0] != "prune") {
				return usageError(out, "cache", "want list or prune")
			}
			if args[0] == "list" && (fs.Changed("all") || fs.Changed("older-than")) {
				return usageError(out, "cache", "--all and --older-than are for cache prune; cache list shows every image")
			}
			if args[0] == "prune" && fs.Changed("json") {
				return usageError(out, "cache", "--json is for cache list")
			}
			if *olderThan < 0 {
				return usageError(out, "cache", "--older-than %s is negative; give how long an image has not been used, such as 720h", *olderThan)
			}
			if *all && fs.Changed("older-than") {
				return usageError(out, "cache", "--all removes every image; --older-than is then meaningless")
			}
			c := base.Cache{Dir: *dir}
			if c.Dir == "" {
				d, err := base.DefaultCacheDir()
				if err != nil {
					fmt.Fprintf(out.stderr, "pibake cache: %v\n", err)
					return exitFailure
				}
				c.Dir = d
			}
			if args[0] == "prune" {
				freed, err := c.Prune(ctx, *olderThan, *all, logf(out))
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
			if *asJSON {
				enc := json.NewEncoder(out.stdout)
				enc.SetIndent("", "  ")
				if entries == nil {
					entries = []base.Entry{}
				}
				enc.Encode(entries)
				return exitOK
			}
			tw := tabwriter.NewWriter(out.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SHA256\tON DISK\tLAST USED\tSOURCES")
			for _, e := range entries {
				id := e.SHA256
				if len(id) > 16 {
					id = id[:16]
				}
				used := e.LastUsed.Format("2006-01-02 15:04")
				if e.InUse {
					used += " (in use)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", id, bytesize.MiB(e.Allocated), used, e.Sources)
			}
			tw.Flush()
			return exitOK
		}
	},
}
