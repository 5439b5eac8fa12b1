package main

import (
	"context"
	"fmt"
	"io"

	"github.com/pibake/pibake/internal/completion"
	"github.com/spf13/pflag"
)

var completionCommand = command{
	summary: "print a shell completion script (bash, zsh or fish)",
	usage:   "bash | zsh | fish",
	flags:   withOptions(runCompletion),
}

// completionOptions are pibake completion's flags: none.
type completionOptions struct{}

func (o *completionOptions) addFlags(*pflag.FlagSet) {}

func runCompletion(_ context.Context, _ *completionOptions, args []string, out outputs) int {
	if len(args) != 1 {
		return usageError(out, "completion", "want one shell: bash, zsh or fish")
	}
	script, ok := completion.Scripts[args[0]]
	if !ok {
		return usageError(out, "completion", "no completion for %q; want bash, zsh or fish", args[0])
	}
	io.WriteString(out.stdout, script)
	return exitOK
}

// complete answers `pibake __complete WORD…`: the candidates for the last
// word, given the ones before it.
func complete(words []string, out io.Writer) {
	for _, c := range candidates(words) {
		fmt.Fprintln(out, c)
	}
}

// candidates are completion's candidates from pibake's commands.
func candidates(words []string) []string {
	cmds := map[string]completion.Command{}
	for name, c := range commands() {
		cmds[name] = completion.Command{Flags: func(fs *pflag.FlagSet) { c.flags(fs) }}
	}
	cmds["cache"] = completion.Command{Flags: cmds["cache"].Flags, Words: []string{"list", "prune"}}
	cmds["completion"] = completion.Command{Flags: cmds["completion"].Flags, Words: completion.Shells()}
	cmds["version"] = completion.Command{Flags: cmds["version"].Flags, NoArgs: true}
	return completion.Candidates(words, cmds)
}
