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

// outputs are where a command writes: results to stdout, everything else
// to stderr.
type outputs struct {
	stdout, stderr io.Writer
	// stderrIsTerminal enables colour in diagnostics.
	stderrIsTerminal bool
}

func commands() map[string]command {
	return map[string]command{
		"validate": validateCommand,
		"build":    buildCommand,
		"plan":     planCommand,
		"inspect":  inspectCommand,
		"fetch":    fetchCommand,
		"cache":    cacheCommand,
		"version":  versionCommand,
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
		if len(args) > 1 && name == "help" {
			return helpFor(args[1], out)
		}
		writeUsage(stdout)
		return exitOK
	}
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(stderr, "pibake: unknown command %q\n\n", name)
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
		fmt.Fprintf(&b, "  %-9s %s\n", n, commands()[n].summary)
	}
	fmt.Fprintf(&b, "  %-9s %s\n", "help", "show help for a command")
	b.WriteString("\nRun 'pibake <command> --help' for a command's flags.\n")
	b.WriteString("Exit codes: 0 ok, 1 failed (invalid recipe or failed build), 2 usage error, 130 interrupted.\n")
	io.WriteString(w, b.String())
}

func writeCommandHelp(w io.Writer, name string, cmd command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "%s\n\nUsage:\n  pibake %s [flags] %s\n", cmd.summary, name, cmd.usage)
	if fs.HasFlags() {
		fmt.Fprintf(w, "\nFlags:\n%s", fs.FlagUsages())
	}
}

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
