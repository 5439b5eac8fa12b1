package main

import (
	"context"
	"fmt"

	"github.com/pibake/pibake/builder/inspect"
	"github.com/spf13/pflag"
)

var inspectCommand = command{
	summary: "show an image's partitions, cmdline, OS release and pibake payload",
	usage:   "IMAGE   (an .img, an .img.xz, a card such as /dev/sdX, or a mounted boot partition)",
	flags:   withOptions(runInspect),
}

// inspectOptions are pibake inspect's flags.
type inspectOptions struct{ json bool }

func (o *inspectOptions) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.json, "json", false, "print the inspection as JSON")
}

func runInspect(_ context.Context, o *inspectOptions, args []string, out outputs) int {
	if len(args) != 1 {
		return usageError(out, "inspect", "want exactly one image (.img, .img.xz, card or mounted boot partition), got %d arguments", len(args))
	}
	ins, err := inspect.Read(args[0])
	if err != nil {
		fmt.Fprintf(out.stderr, "pibake inspect: %v\n", err)
		return exitFailure
	}
	write := ins.WriteText
	if o.json {
		write = ins.WriteJSON
	}
	if err := write(out.stdout); err != nil {
		fmt.Fprintf(out.stderr, "pibake inspect: write: %v\n", err)
		return exitFailure
	}
	return exitOK
}
