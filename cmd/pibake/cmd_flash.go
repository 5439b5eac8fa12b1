package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/builder/flash"
	"github.com/pibake/pibake/internal/bytesize"
	"github.com/spf13/pflag"
)

var flashCommand = command{
	summary: "write nodes (or a built image) to SD cards and SSDs at once, verified",
	usage:   "RECIPE NODE=DEVICE... | IMAGE DEVICE...",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		var bf baseFlags
		bf.add(fs)
		out := fs.StringP("out", "o", "", "output directory whose cluster identity the nodes get, and whose manifest records the flash (default: the recipe's output.dir, else ./out)")
		image := fs.String("image", "", "base image source instead of the recipe's (alias, URL or .img/.img.xz path)")
		yes := fs.BoolP("yes", "y", false, "write without asking (needed when stdin is not a terminal)")
		dryRun := fs.Bool("dry-run", false, "check the targets and show what would be written, then stop")
		allowFixed := fs.Bool("allow-fixed", false, "also write fixed disks (not removable, not USB): internal disks, loop devices")
		wait := fs.Bool("wait", false, "wait for a build writing the output directory instead of failing at once")
		return func(ctx context.Context, args []string, o outputs) int {
			if msg := bf.usage(); msg != "" {
				return usageError(o, "flash", "%s", msg)
			}
			if len(args) < 2 {
				return usageError(o, "flash", "want a recipe and NODE=DEVICE pairs, or an image and devices; got %d arguments", len(args))
			}
			imageMode := strings.HasSuffix(args[0], ".img") || strings.HasSuffix(args[0], ".img.xz")
			var targets []builder.FlashTarget
			for _, a := range args[1:] {
				node, path, ok := strings.Cut(a, "=")
				switch {
				case imageMode:
					node, path = "", a
				case !ok || node == "" || path == "":
					return usageError(o, "flash", "%q is not NODE=DEVICE (e.g. pi-01=/dev/sdb)", a)
				}
				tg, err := flash.Host.Inspect(path)
				if err != nil {
					fmt.Fprintf(o.stderr, "pibake flash: %v\n", err)
					return exitFailure
				}
				targets = append(targets, builder.FlashTarget{Node: node, Target: tg})
			}
			confirm := func(size int64, targets []builder.FlashTarget) error {
				writePlan(o, size, targets)
				switch {
				case *dryRun:
					return errDryRun
				case *yes || allNewFiles(targets):
					return nil
				case !isTerminal(os.Stdin) || !o.stderrIsTerminal:
					return errors.New("not asking on a terminal: pass --yes to overwrite these devices and files")
				}
				fmt.Fprintf(o.stderr, "Everything on the devices and files above will be overwritten. Type yes to write: ")
				line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if strings.TrimSpace(line) != "yes" {
					return errors.New("not confirmed; nothing was written")
				}
				return nil
			}
			bopt, err := bf.options(o)
			if err != nil {
				fmt.Fprintf(o.stderr, "pibake flash: %v\n", err)
				return exitFailure
			}
			defer bf.done()
			opt := builder.FlashOptions{
				Options:    builder.Options{OutDir: *out, Jobs: bf.jobs, Base: bopt, Image: *image, Wait: *wait, Version: fullVersion(), Logf: bopt.Logf, Progress: bopt.Progress},
				Targets:    targets,
				AllowFixed: *allowFixed,
				Confirm:    confirm,
			}
			var results []flash.Result
			if imageMode {
				results, err = builder.FlashImage(ctx, args[0], opt)
			} else {
				r, _ := loadRecipe(o, args[0])
				if r == nil {
					return exitFailure
				}
				if err := applyLock(ctx, r, false, &lockFlags{}, &bf, o); err != nil {
					reportError(o, "flash", err)
					return exitFailure
				}
				results, err = builder.Flash(ctx, r, opt)
			}
			bf.done() // the summary below the bars
			if len(results) > 0 {
				writeFlashTable(o, results)
			}
			for _, res := range results {
				if res.State == flash.Verified {
					fmt.Fprintf(o.stdout, "%s\t%s\t%s\n", res.Target.Path, res.Source, res.SHA256)
				}
			}
			switch {
			case errors.Is(err, errDryRun):
				fmt.Fprintln(o.stderr, "dry run: nothing was written")
				return exitOK
			case errors.Is(err, builder.ErrUnknownNode):
				fmt.Fprintf(o.stderr, "pibake flash: %v\n", err)
				return exitUsage
			case errors.Is(err, context.Canceled):
				var incomplete []string
				for _, res := range results {
					if res.State != flash.Verified {
						incomplete = append(incomplete, res.Target.Path)
					}
				}
				if len(incomplete) == 0 {
					fmt.Fprintln(o.stderr, "pibake flash: interrupted before writing; nothing was written")
				} else {
					fmt.Fprintf(o.stderr, "pibake flash: interrupted; incomplete, do not boot: %s\n", strings.Join(incomplete, ", "))
				}
				return exitInterrupted
			case err != nil:
				fmt.Fprintf(o.stderr, "pibake flash: %v\n", err)
				return exitFailure
			}
			return exitOK
		}
	},
}

var errDryRun = errors.New("dry run")

// allNewFiles reports whether every target is a new (or empty) plain
// file: nothing is lost by writing them, so there is nothing to confirm.
// A file already there is asked about like a device: it may be a backup
// image, or a recipe named by mistake (pi-01=lab.hcl).
func allNewFiles(targets []builder.FlashTarget) bool {
	for _, t := range targets {
		if !t.Target.IsFile() || t.Target.Existing > 0 {
			return false
		}
	}
	return true
}

// writePlan shows what will be written where: for each device its model,
// serial, size and current partitions, so the user can tell the disks
// apart before saying yes.
func writePlan(o outputs, size int64, targets []builder.FlashTarget) {
	tw := tabwriter.NewWriter(o.stderr, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Image size %s.\nTARGET\tWRITES\tDEVICE\tPARTITIONS NOW\n", strings.TrimSpace(bytesize.Format(size)))
	for _, t := range targets {
		what, parts := "plain file", "-"
		if n := t.Target.Existing; n > 0 {
			what = "plain file, " + strings.TrimSpace(bytesize.Format(n)) + " there now"
		}
		if d := t.Target.Disk; d != nil {
			what = d.String()
			if d.Transport != "" {
				what += " (" + d.Transport + ")"
			}
			var ps []string
			for _, p := range d.Partitions {
				s := p.Name + " " + strings.TrimSpace(bytesize.Format(p.Size))
				if p.FS != "" || p.Label != "" {
					s += " " + strings.TrimSpace(p.FS+" "+p.Label)
				}
				ps = append(ps, s)
			}
			parts = "none"
			if len(ps) > 0 {
				parts = strings.Join(ps, ", ")
			}
		}
		node := t.Node
		if node == "" {
			node = "the image"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Target.Path, node, what, parts)
	}
	tw.Flush()
}

// writeFlashTable is the per-target summary, on stderr.
func writeFlashTable(o outputs, results []flash.Result) {
	tw := tabwriter.NewWriter(o.stderr, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTARGET\tNODE\tRESULT\tSHA256\tBOOT")
	for _, r := range results {
		sum := "-"
		if r.State == flash.Verified && len(r.SHA256) > 12 {
			sum = r.SHA256[:12] + "…"
		}
		result := string(r.State)
		if r.State == flash.Failed {
			result = "FAILED: " + oneLine(r.Err)
		}
		boot := r.Boot
		switch {
		case r.Boot == "untouched":
			boot = "untouched: nothing was written to it"
		case r.State != flash.Verified:
			boot = "DO NOT BOOT: " + boot
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Target.Path, r.Source, result, sum, boot)
	}
	tw.Flush()
}
