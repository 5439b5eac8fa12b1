package main

import (
	"fmt"
	"strings"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/internal/progressview"
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
	view     *progressview.View
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
		b.view = progressview.New(out.stderr, out.stderrIsTerminal)
	}
	if b.view != nil {
		opt.Logf, opt.Progress = b.view.Logf, b.view.Report
	}
	return opt, nil
}

// done ends the progress display, if any.
func (b *baseFlags) done() {
	if b.view != nil {
		b.view.Stop()
	}
}

// logf is where a command's own progress lines go: above the bars when
// they are shown, else straight to stderr.
func (b *baseFlags) logf(out outputs) func(string, ...any) {
	if b.view != nil {
		return b.view.Logf
	}
	return logf(out)
}

// logf writes progress lines to stderr.
func logf(out outputs) func(string, ...any) {
	return func(format string, args ...any) {
		fmt.Fprintf(out.stderr, "pibake: "+format+"\n", args...)
	}
}

// quietLogf is logf, or with -q only the warnings.
func quietLogf(out outputs, quiet bool) func(string, ...any) {
	l := logf(out)
	if !quiet {
		return l
	}
	return func(format string, args ...any) {
		if strings.HasPrefix(format, "warning") {
			l(format, args...)
		}
	}
}
