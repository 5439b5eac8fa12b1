package main

import (
	"context"
	"fmt"

	"github.com/pibake/pibake/builder/verify"
	"github.com/spf13/pflag"
)

var verifyCommand = command{
	summary: "check a build directory, image or card: sums, signatures, bytes against the base, SBOMs, provenance",
	usage:   "DIR|IMAGE|DEVICE",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		var opt verify.Options
		fs.StringVar(&opt.AllowedSigners, "allowed-signers", "", "an allowed_signers file (ssh-keygen(1)): SHA256SUMS and provenance.json must be signed by one of its keys")
		fs.StringVar(&opt.Base, "base", "", "the raw base image (e.g. from pibake's cache): name changed bytes exactly")
		fs.StringVar(&opt.Dir, "dir", "", "for an image or card: the build directory holding its records (default: the image's directory)")
		fs.StringVar(&opt.Node, "node", "", "for an image or card: the node it holds (default: read from its boot partition)")
		asJSON := fs.Bool("json", false, "print the report as JSON")
		return func(ctx context.Context, args []string, out outputs) int {
			if len(args) != 1 {
				return usageError(out, "verify", "want exactly one build directory, image or device, got %d arguments", len(args))
			}
			r, err := verify.Path(ctx, args[0], opt)
			if err != nil {
				fmt.Fprintf(out.stderr, "pibake verify: %v\n", err)
				return exitFailure
			}
			write := r.WriteText
			if *asJSON {
				write = r.WriteJSON
			}
			if err := write(out.stdout); err != nil {
				fmt.Fprintf(out.stderr, "pibake verify: write: %v\n", err)
				return exitFailure
			}
			if r.Failed() {
				return exitFailure
			}
			return exitOK
		}
	},
}
