// Command pibake bakes ready-to-flash Raspberry Pi OS images for k3s
// clusters from one HCL recipe.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/pibake/pibake/internal/neterr"
	"github.com/pibake/pibake/internal/suggest"
	"github.com/spf13/pflag"
)

// Exit codes. Documented in README.md; never renumber.
const (
	exitOK          = 0
	exitFailure     = 1 // an invalid recipe, or a build that ran and failed
	exitUsage       = 2 // bad command line; nothing was read or written
	exitInterrupted = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one pibake verb.
type command struct {
	summary string
	usage   string // arguments after the verb
	// flags registers the command's flags and returns the function that
	// runs it with the remaining arguments.
	flags func(fs *pflag.FlagSet) func(ctx context.Context, args []string, out outputs) int
}

// flagger is a command's options: a struct whose addFlags registers its
// flags (restic's and crane's layout: one options struct per command).
type flagger[O any] interface {
	*O
	addFlags(fs *pflag.FlagSet)
}

// withOptions wires a command's options struct to its run function:
// flags fill the options, then run gets them with the arguments left.
func withOptions[O any, P flagger[O]](run func(ctx context.Context, o P, args []string, out outputs) int) func(*pflag.FlagSet) func(context.Context, []string, outputs) int {
	return func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		o := P(new(O))
		o.addFlags(fs)
		return func(ctx context.Context, args []string, out outputs) int { return run(ctx, o, args, out) }
	}
}

// outputs are where a command writes: results to stdout, everything else
// to stderr.
type outputs struct {
	stdout, stderr io.Writer
	// stderrIsTerminal enables colour in diagnostics.
	stderrIsTerminal bool
}

func commands() map[string]command {
	return map[string]command{
		"validate":   validateCommand,
		"build":      buildCommand,
		"flash":      flashCommand,
		"plan":       planCommand,
		"inspect":    inspectCommand,
		"fetch":      fetchCommand,
		"cache":      cacheCommand,
		"version":    versionCommand,
		"completion": completionCommand,
		"lock":       lockCommand,
		"init":       initCommand,
		"merge":      mergeCommand,
		"watch":      watchCommand,
		"verify":     verifyCommand,
	}
}

// run is main without the process globals, so tests can call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	out := outputs{stdout: stdout, stderr: stderr, stderrIsTerminal: isTerminal(stderr)}
	if len(args) == 0 {
		writeUsage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "--help":
		if len(args) > 1 && name == "help" && args[1] != "-h" && args[1] != "--help" {
			return helpFor(args[1], out)
		}
		writeUsage(stdout)
		return exitOK
	case "__complete": // for the completion scripts; not listed
		complete(args[1:], stdout)
		return exitOK
	case "--version", "-v":
		name, args = "version", append([]string{"version"}, args[1:]...)
	}
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(stderr, "pibake: unknown command %q%s\n\n", name, didYouMean(name))
		writeUsage(stderr)
		return exitUsage
	}
	fs := pflag.NewFlagSet("pibake "+name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed below, help on request
	runCmd := cmd.flags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			writeCommandHelp(stdout, name, cmd, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "pibake %s: %v\nRun 'pibake %s --help' for usage.\n", name, err, name)
		return exitUsage
	}
	code := runCmd(ctx, fs.Args(), out)
	if code != exitOK && ctx.Err() != nil {
		return exitInterrupted
	}
	return code
}

func helpFor(name string, out outputs) int {
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(out.stderr, "pibake help: unknown command %q\n", name)
		return exitUsage
	}
	fs := pflag.NewFlagSet("pibake "+name, pflag.ContinueOnError)
	cmd.flags(fs)
	writeCommandHelp(out.stdout, name, cmd, fs)
	return exitOK
}

func writeUsage(w io.Writer) {
	var b strings.Builder
	b.WriteString("pibake bakes ready-to-flash Raspberry Pi OS images for k3s clusters.\n\n")
	b.WriteString("Usage:\n  pibake <command> [flags] [arguments]\n\nCommands:\n")
	names := make([]string, 0, len(commands()))
	for n := range commands() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-11s %s\n", n, commands()[n].summary)
	}
	fmt.Fprintf(&b, "  %-11s %s\n", "help", "show help for a command")
	b.WriteString("\nRun 'pibake <command> --help' for a command's flags; 'pibake --version' (-v) prints the version.\n")
	b.WriteString("Exit codes: 0 ok, 1 failed (invalid recipe or failed build), 2 usage error, 130 interrupted.\n")
	io.WriteString(w, b.String())
}

func writeCommandHelp(w io.Writer, name string, cmd command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "%s\n\nUsage:\n  pibake %s [flags] %s\n", cmd.summary, name, cmd.usage)
	if fs.HasFlags() {
		fmt.Fprintf(w, "\nFlags:\n%s", fs.FlagUsages())
	}
}

// reportError prints why a command failed, in the user's terms: an
// interrupt is said as such, not as "context canceled", and a download
// that never reached its server says what can be done offline.
func reportError(out outputs, name string, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		what := ""
		if name == "build" {
			what = ": nodes finished before it stay published; nothing half-written was kept"
		}
		fmt.Fprintf(out.stderr, "pibake %s: interrupted%s\n", name, what)
		return
	}
	fmt.Fprintf(out.stderr, "pibake %s: %v\n", name, err)
	var unreachable *neterr.Unreachable
	if errors.As(err, &unreachable) {
		hint := offlineHint
		if name == "lock" {
			hint = lockOfflineHint
		}
		io.WriteString(out.stderr, hint)
	}
}

// offlineHint is what a user without a network (or behind a proxy) can do.
const offlineHint = `No network here? Without one:
  make demo                              builds recipes/examples/lab.hcl against a generated image, offline
  pibake build RECIPE --image PATH       builds from a Raspberry Pi OS .img or .img.xz you already have
Behind a proxy, set HTTPS_PROXY (and NO_PROXY); from a mirror, set image.source to its URL.
`

// didYouMean suggests the command a typo was meant to be (at most two
// edits away: buld, biuld, flsh), or says nothing.
func didYouMean(name string) string {
	var names []string
	for c := range commands() {
		names = append(names, c)
	}
	if best := suggest.Nearest(name, names, 2); best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return ""
}

// lockOfflineHint is offlineHint for pibake lock, which exists to ask the
// network what an alias and a k3s channel mean today.
const lockOfflineHint = `No network here? pibake lock asks the OS list and the k3s channel server, so:
  run it where there is a network and commit the lock file beside the recipe: builds then resolve nothing
  (they still need the image: from the cache, or --image PATH)
  --os-list URL, --k3s-channels URL      ask a mirror of them instead
  pibake build RECIPE --image PATH       builds without a lock file, from an image you already have
Behind a proxy, set HTTPS_PROXY (and NO_PROXY).
`

// usageError reports wrong arguments to a command.
func usageError(out outputs, name, format string, args ...any) int {
	fmt.Fprintf(out.stderr, "pibake %s: %s\nRun 'pibake %s --help' for usage.\n", name, fmt.Sprintf(format, args...), name)
	return exitUsage
}

// isTerminal reports whether w is a character device, without pulling in
// golang.org/x/term.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
