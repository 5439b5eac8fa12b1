// Package completion answers shell completion for pibake: the scripts
// are thin; they hand the words typed so far to `pibake __complete`,
// which answers from the same command and flag definitions the command
// line parses with, and reads the recipe named on the line for --node.
package completion

import (
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/pibake/pibake/recipes"
	"github.com/spf13/pflag"
	"github.com/zclconf/go-cty/cty"
)

// Files is the answer line that asks the shell to complete file names.
const Files = ":files"

// Command is what completion needs to know of a command.
type Command struct {
	// Flags registers the command's flags.
	Flags func(fs *pflag.FlagSet)
	// Words are the words its argument is one of; nil for file names.
	Words []string
	// NoArgs: the command takes no argument.
	NoArgs bool
}

// Shells are the shells completion has a script for.
func Shells() []string { return sortedKeys(Scripts) }

// Scripts are the shells' completion scripts, installed as the README
// says, e.g. `source <(pibake completion bash)` in ~/.bashrc.
var Scripts = map[string]string{
	"bash": `# pibake completion for bash: source <(pibake completion bash)
_pibake() {
	local cur=${COMP_WORDS[COMP_CWORD]} out
	local IFS=$'\n'
	out=$("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) || return 0
	if [ "$out" = ":files" ]; then
		compopt -o filenames 2>/dev/null
		COMPREPLY=($(compgen -f -- "$cur"))
	else
		COMPREPLY=($(compgen -W "$out" -- "$cur"))
	fi
}
complete -F _pibake pibake
`,
	"zsh": `#compdef pibake
# pibake completion for zsh: source <(pibake completion zsh), after compinit
_pibake() {
	local -a out
	out=("${(@f)$("${words[1]}" __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
	if [[ "${out[1]}" == ":files" ]]; then
		_files
	else
		compadd -- "${out[@]}"
	fi
}
if (( $+functions[compdef] )); then
	compdef _pibake pibake
fi
`,
	"fish": `# pibake completion for fish: pibake completion fish | source
function __pibake_complete
	set -l tokens (commandline -opc)
	set -l out ($tokens[1] __complete $tokens[2..-1] (commandline -ct) 2>/dev/null)
	if test "$out[1]" = ":files"
		__fish_complete_path (commandline -ct)
	else
		printf '%s\n' $out
	end
end
complete -c pibake -f -a '(__pibake_complete)'
`,
}

// Candidates are the candidates for the last of words (the shell filters
// them by its prefix), given the ones before it.
func Candidates(words []string, cmds map[string]Command) []string {
	if len(words) == 0 {
		words = []string{""}
	}
	cur, before := words[len(words)-1], words[:len(words)-1]
	if len(before) == 0 {
		names := []string{"help", "--help", "--version"}
		for n := range cmds {
			names = append(names, n)
		}
		sort.Strings(names)
		return names
	}
	name := before[0]
	if name == "help" {
		if len(before) > 1 {
			return nil
		}
		return sortedKeys(cmds)
	}
	cmd, ok := cmds[name]
	if !ok {
		return nil
	}
	fs := pflag.NewFlagSet("pibake "+name, pflag.ContinueOnError)
	cmd.Flags(fs)
	// The value of the flag just before?
	if prev := before[len(before)-1]; len(before) > 1 && strings.HasPrefix(prev, "-") && !strings.Contains(prev, "=") {
		if f := lookupFlag(fs, prev); f != nil && f.Value.Type() != "bool" {
			return flagValues(fs, f.Name, before[1:])
		}
	}
	if strings.HasPrefix(cur, "-") {
		var flags []string
		fs.VisitAll(func(f *pflag.Flag) {
			flags = append(flags, "--"+f.Name)
			if f.Shorthand != "" {
				flags = append(flags, "-"+f.Shorthand)
			}
		})
		sort.Strings(flags)
		return append(flags, "--help")
	}
	switch {
	case cmd.NoArgs:
		return nil
	case cmd.Words != nil:
		return cmd.Words
	}
	return []string{Files}
}

func lookupFlag(fs *pflag.FlagSet, word string) *pflag.Flag {
	if n, ok := strings.CutPrefix(word, "--"); ok {
		return fs.Lookup(n)
	}
	if len(word) == 2 {
		return fs.ShorthandLookup(word[1:])
	}
	return nil
}

// flagValues are the candidates for a flag's value.
func flagValues(fs *pflag.FlagSet, flag string, args []string) []string {
	switch flag {
	case "node", "rotate-node-password":
		return recipeNodes(fs, args)
	case "older-than":
		return []string{"24h", "168h", "720h"}
	case "jobs":
		return nil
	}
	return []string{Files}
}

// recipeNodes are the hostnames and node block labels of the recipe named
// among args (the first argument that is not a flag or a flag's value),
// when it loads; completion stays silent otherwise.
func recipeNodes(fs *pflag.FlagSet, args []string) []string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if !strings.Contains(a, "=") && i+1 < len(args) && !isBoolFlag(fs, a) {
				i++ // its value
			}
			continue
		}
		if fi, err := os.Stat(a); err != nil || (!fi.IsDir() && !strings.HasSuffix(a, ".hcl")) {
			continue
		}
		r, _ := recipes.Load(hclparse.NewParser(), a)
		if r == nil {
			// An env() of a variable unset here, a typo mid-edit: the
			// node blocks' labels still complete.
			return nodeLabels(a)
		}
		var names []string
		for _, n := range r.Nodes {
			names = append(names, n.Hostname)
			if n.Group != n.Hostname && !slices.Contains(names, n.Group) {
				names = append(names, n.Group)
			}
		}
		sort.Strings(names)
		return names
	}
	return nil
}

// nodeLabels reads the node blocks of a recipe that does not load,
// without evaluating it: each label, its hostname when written as a
// literal, and label-1 … label-N when count is a literal N.
func nodeLabels(path string) []string {
	files := []string{path}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		files, _ = filepath.Glob(filepath.Join(path, "*.hcl"))
	}
	var names []string
	add := func(n string) {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	p := hclparse.NewParser()
	for _, name := range files {
		f, _ := p.ParseHCLFile(name)
		body, ok := f.Body.(*hclsyntax.Body)
		if f == nil || !ok {
			continue
		}
		for _, b := range body.Blocks {
			if b.Type != "node" || len(b.Labels) != 1 {
				continue
			}
			add(b.Labels[0])
			if h, ok := literal(b.Body, "hostname"); ok && h.Type() == cty.String {
				add(h.AsString())
			} else if c, ok := literal(b.Body, "count"); ok && c.Type() == cty.Number {
				if n, acc := c.AsBigFloat().Int64(); acc == big.Exact && n <= 1000 {
					for i := int64(1); i <= n; i++ {
						add(fmt.Sprintf("%s-%d", b.Labels[0], i))
					}
				}
			}
		}
	}
	sort.Strings(names)
	return names
}

// literal is an attribute's value when it needs no variable or function.
func literal(body *hclsyntax.Body, name string) (cty.Value, bool) {
	attr, ok := body.Attributes[name]
	if !ok {
		return cty.NilVal, false
	}
	v, diags := attr.Expr.Value(nil)
	return v, !diags.HasErrors() && v.IsKnown() && !v.IsNull()
}

// isBoolFlag reports whether a flag takes no value.
func isBoolFlag(fs *pflag.FlagSet, word string) bool {
	f := lookupFlag(fs, word)
	return f != nil && f.Value.Type() == "bool"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
