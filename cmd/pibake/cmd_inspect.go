package main

import (
	"context"
	"fmt"

	"github.com/pibake/pibake/builder"
	"github.com/spf13/pflag"
)

var inspectCommand = command{
	summary: "show an image's partitions, cmdline, OS release and pibake payload",
	usage:   "IMAGE   (an .img, an .img.xz, a card such as /dev/sdX, or a mounted boot partition)",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		asJSON := fs.Bool("json", false, "print the inspection as JSON")
		return func(_ context.Context, args []string, out outputs) int {
			if len(args) != 1 {
				return usageError(out, "inspect", "want exactly one image (.img, .img.xz, card or mounted boot partition), got %d arguments", len(args))
			}
			ins, err := builder.Inspect(args[0])
			if err != nil {
				fmt.Fprintf(out.stderr, "pibake inspect: %v\n", err)
				return exitFailure
			}
			write := ins.WriteText
			if *asJSON {
				write = ins.WriteJSON
			}
			if err := write(out.stdout); err != nil {
				fmt.Fprintf(out.stderr, "pibake inspect: write: %v\n", err)
				return exitFailure
			}
			return exitOK
		}
	},
}
