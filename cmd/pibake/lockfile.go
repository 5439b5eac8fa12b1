package main

import (
	"context"
	"fmt"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/recipes"
	"github.com/spf13/pflag"
)

// lockFlags are where lock resolution asks: Raspberry Pi's OS list and
// k3s's channel server, or mirrors of them.
type lockFlags struct{ osList, k3sChannels string }

func (lf *lockFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&lf.osList, "os-list", "", "OS list to resolve image aliases with (default: Raspberry Pi Imager's, "+"downloads.raspberrypi.com)")
	fs.StringVar(&lf.k3sChannels, "k3s-channels", "", "k3s channel server to resolve k3s_channel with (default: update.k3s.io)")
}

// make resolves and writes the recipe's lock file.
func (lf *lockFlags) make(ctx context.Context, r *recipes.Recipe, bf *baseFlags, out outputs) (*recipes.Lock, error) {
	bopt, err := bf.options(out)
	if err != nil {
		return nil, err
	}
	l, err := fleet.MakeLock(ctx, r, fleet.LockOptions{Base: bopt, OSList: lf.osList, K3sChannels: lf.k3sChannels})
	if err != nil {
		return nil, err
	}
	if err := fleet.WriteLock(l, r.Path); err != nil {
		return nil, fmt.Errorf("write %s: %w", l.Path, err)
	}
	bf.logf(out)("wrote %s", l.Path)
	return l, nil
}

// applyLock makes r use its lock file, when there is one (made anew with
// update). It says which it used; a lock that does not match the recipe
// is an error.
func applyLock(ctx context.Context, r *recipes.Recipe, update bool, lf *lockFlags, bf *baseFlags, out outputs) (*recipes.Lock, error) {
	if update {
		if _, err := lf.make(ctx, r, bf, out); err != nil {
			return nil, err
		}
	}
	l, diags := recipes.LoadLock(hclparse.NewParser(), recipes.LockPath(r))
	if diags.HasErrors() {
		return nil, diags
	}
	if l == nil {
		return nil, nil
	}
	if err := r.ApplyLock(l); err != nil {
		return nil, err
	}
	what := "image " + l.Image.URL
	if l.Image.ReleaseDate != "" {
		what += " (released " + l.Image.ReleaseDate + ")"
	}
	if l.K3s != nil {
		what += ", k3s " + l.K3s.Version + " for channel " + l.K3s.Channel
	}
	if !bf.quiet {
		bf.logf(out)("using %s: %s", l.Path, what)
	}
	return l, nil
}
