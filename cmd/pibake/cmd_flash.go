package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pibake/pibake/builder/flash"
	"github.com/pibake/pibake/builder/flashing"
	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/builder/inputs"
	"github.com/spf13/pflag"
)

var flashCommand = command{
	summary: "write nodes (or a built image) to SD cards and SSDs at once, verified",
	usage:   "RECIPE NODE=DEVICE... | IMAGE DEVICE...",
	flags:   withOptions(runFlash),
}

// flashOptions are pibake flash's flags.
type flashOptions struct {
	base                          baseFlags
	out, image                    string
	yes, dryRun, allowFixed, wait bool
}

func (o *flashOptions) addFlags(fs *pflag.FlagSet) {
	o.base.add(fs)
	fs.StringVarP(&o.out, "out", "o", "", "output directory whose cluster identity the nodes get, and whose manifest records the flash (default: the recipe's output.dir, else ./out)")
	fs.StringVar(&o.image, "image", "", "base image source instead of the recipe's (alias, URL or .img/.img.xz path)")
	fs.BoolVarP(&o.yes, "yes", "y", false, "write without asking (needed when stdin is not a terminal)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "check the targets and show what would be written, then stop")
	fs.BoolVar(&o.allowFixed, "allow-fixed", false, "also write fixed disks (not removable, not USB): internal disks, loop devices")
	fs.BoolVar(&o.wait, "wait", false, "wait for a build writing the output directory instead of failing at once")
}

func runFlash(ctx context.Context, o *flashOptions, args []string, out outputs) int {
	if msg := o.base.usage(); msg != "" {
		return usageError(out, "flash", "%s", msg)
	}
	if len(args) < 2 {
		return usageError(out, "flash", "want a recipe and NODE=DEVICE pairs, or an image and devices; got %d arguments", len(args))
	}
	imageMode := strings.HasSuffix(args[0], ".img") || strings.HasSuffix(args[0], ".img.xz")
	targets, code := flashTargets(args[1:], imageMode, out)
	if code != exitOK {
		return code
	}
	bopt, err := o.base.options(out)
	if err != nil {
		fmt.Fprintf(out.stderr, "pibake flash: %v\n", err)
		return exitFailure
	}
	defer o.base.done()
	opt := flashing.Options{
		Options:    inputs.Options{OutDir: o.out, Jobs: o.base.jobs, Base: bopt, Image: o.image, Version: fullVersion(), Logf: bopt.Logf, Progress: bopt.Progress},
		Wait:       o.wait,
		Targets:    targets,
		AllowFixed: o.allowFixed,
		Confirm:    confirmFlash(o, out),
	}
	var results []flash.Result
	if imageMode {
		results, err = flashing.FlashImage(ctx, args[0], opt)
	} else {
		r, _ := loadRecipe(out, args[0])
		if r == nil {
			return exitFailure
		}
		if _, err := applyLock(ctx, r, false, &lockFlags{}, &o.base, out); err != nil {
			reportError(out, "flash", err)
			return exitFailure
		}
		results, err = flashing.Flash(ctx, r, opt)
	}
	o.base.done() // the summary below the bars
	return flashOutcome(out, results, err)
}

// flashTargets reads NODE=DEVICE pairs (or, for an image, devices) and
// inspects each device.
func flashTargets(args []string, imageMode bool, out outputs) ([]flashing.Target, int) {
	var targets []flashing.Target
	for _, a := range args {
		node, path, ok := strings.Cut(a, "=")
		switch {
		case imageMode:
			node, path = "", a
		case !ok || node == "" || path == "":
			return nil, usageError(out, "flash", "%q is not NODE=DEVICE (e.g. pi-01=/dev/sdb)", a)
		}
		tg, err := flash.Host.Inspect(path)
		if err != nil {
			fmt.Fprintf(out.stderr, "pibake flash: %v\n", err)
			return nil, exitFailure
		}
		targets = append(targets, flashing.Target{Node: node, Target: tg})
	}
	return targets, exitOK
}

// flashOutcome shows the results (a table on stderr, a line per verified
// target on stdout) and picks the exit code.
func flashOutcome(out outputs, results []flash.Result, err error) int {
	if len(results) > 0 {
		flashing.WriteResults(out.stderr, results)
	}
	for _, res := range results {
		if res.State == flash.Verified {
			fmt.Fprintf(out.stdout, "%s\t%s\t%s\n", res.Target.Path, res.Source, res.SHA256)
		}
	}
	switch {
	case errors.Is(err, errDryRun):
		fmt.Fprintln(out.stderr, "dry run: nothing was written")
		return exitOK
	case errors.Is(err, fleet.ErrUnknownNode):
		fmt.Fprintf(out.stderr, "pibake flash: %v\n", err)
		return exitUsage
	case errors.Is(err, context.Canceled):
		var incomplete []string
		for _, res := range results {
			if res.State != flash.Verified {
				incomplete = append(incomplete, res.Target.Path)
			}
		}
		if len(incomplete) == 0 {
			fmt.Fprintln(out.stderr, "pibake flash: interrupted before writing; nothing was written")
		} else {
			fmt.Fprintf(out.stderr, "pibake flash: interrupted; incomplete, do not boot: %s\n", strings.Join(incomplete, ", "))
		}
		return exitInterrupted
	case err != nil:
		fmt.Fprintf(out.stderr, "pibake flash: %v\n", err)
		return exitFailure
	}
	return exitOK
}
