package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/pflag"
)

// version is set at link time by the Makefile (-X main.version=…).
var version = "dev"

var versionCommand = command{
	summary: "print pibake's version",
	flags:   withOptions(runVersion),
}

// versionOptions are pibake version's flags: none.
type versionOptions struct{}

func (o *versionOptions) addFlags(*pflag.FlagSet) {}

func runVersion(_ context.Context, _ *versionOptions, args []string, out outputs) int {
	if len(args) != 0 {
		return usageError(out, "version", "takes no arguments")
	}
	fmt.Fprintf(out.stdout, "pibake %s (%s, %s/%s)\n", fullVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}

// fullVersion is the link-time version, or the VCS revision the binary was
// built from when that is all there is.
func fullVersion() string {
	if version != "dev" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return version
	}
	if dirty {
		rev += "-dirty"
	}
	return version + "-" + rev
}
