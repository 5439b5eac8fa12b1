package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
)

var lockCommand = command{
	summary: "pin a recipe's moving inputs (image alias, k3s channel) in a lock file beside it",
	usage:   "RECIPE",
	flags:   withOptions(runLock),
}

// lockOptions are pibake lock's flags.
type lockOptions struct {
	base baseFlags
	lock lockFlags
}

func (o *lockOptions) addFlags(fs *pflag.FlagSet) {
	o.base.add(fs)
	o.lock.add(fs)
}

func runLock(ctx context.Context, o *lockOptions, args []string, out outputs) int {
	if msg := o.base.usage(); msg != "" {
		return usageError(out, "lock", "%s", msg)
	}
	if len(args) != 1 {
		return usageError(out, "lock", "want exactly one recipe (a .hcl file or a directory of them), got %d arguments", len(args))
	}
	r, _ := loadRecipe(out, args[0])
	if r == nil {
		return exitFailure
	}
	defer o.base.done()
	l, err := o.lock.make(ctx, r, &o.base, out)
	if err != nil {
		reportError(out, "lock", err)
		return exitFailure
	}
	fmt.Fprintln(out.stdout, l.Path)
	return exitOK
}
