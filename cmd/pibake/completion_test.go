package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/completion"
	"github.com/pibake/pibake/internal/testimage"
)

const labRecipe = "../../recipes/examples/lab.hcl"

func TestCandidates(t *testing.T) {
	tests := []struct {
		words []string
		want  []string // all of these, in this order, among the candidates
		not   []string
	}{
		{words: []string{""}, want: []string{"--help", "--version", "build", "cache", "completion", "fetch", "help", "inspect", "plan", "validate", "version"}},
		{words: []string{"help", ""}, want: []string{"build", "completion"}, not: []string{"help"}},
		{words: []string{"build", "--"}, want: []string{"--compress", "--new-cluster", "--node", "--rotate-node-password", "--help"}, not: []string{"--json"}},
		{words: []string{"plan", "-"}, want: []string{"--json", "--out", "-o"}},
		{words: []string{"build", labRecipe, "--node", ""}, want: []string{"pi-agent", "pi-agent-1", "pi-agent-2", "pi-server"}},
		{words: []string{"build", "--force", labRecipe, "--rotate-node-password", "pi"}, want: []string{"pi-agent", "pi-server"}},
		{words: []string{"build", "--out", "out", labRecipe, "--node", ""}, want: []string{"pi-server"}},
		{words: []string{"build", "--node", ""}, want: nil, not: []string{"pi-server", completion.Files}},
		{words: []string{"build", "--out", ""}, want: []string{completion.Files}},
		{words: []string{"build", ""}, want: []string{completion.Files}},
		{words: []string{"cache", ""}, want: []string{"list", "prune"}},
		{words: []string{"cache", "prune", "--older-than", ""}, want: []string{"720h"}},
		{words: []string{"completion", ""}, want: []string{"bash", "fish", "zsh"}},
		{words: []string{"bake", ""}, want: nil, not: []string{completion.Files}},
	}
	for _, tc := range tests {
		got := candidates(tc.words)
		i := 0
		for _, w := range tc.want {
			j := slices.Index(got[i:], w)
			if j < 0 {
				t.Errorf("candidates(%q) = %q; want %q (in order)", tc.words, got, tc.want)
				break
			}
			i += j + 1
		}
		for _, w := range tc.not {
			if slices.Contains(got, w) {
				t.Errorf("candidates(%q) = %q; must not offer %q", tc.words, got, w)
			}
		}
	}
}

// pibakeOnPath puts a "pibake" on PATH that runs this test binary as
// pibake, for the shells to call.
func pibakeOnPath(t *testing.T) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := "#!/bin/sh\nPIBAKE_TEST_AS_PIBAKE=1 exec " + self + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "pibake"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
}

// TestCompletionInShells loads each script into the real shell and asks
// it to complete, as a user pressing Tab would.
func TestCompletionInShells(t *testing.T) {
	env := pibakeOnPath(t)
	shell := func(name, script string) string {
		t.Helper()
		cmd := exec.Command(testimage.Tool(t, name), "-c", script)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		return string(out)
	}
	lines := func(s string) []string { return strings.Fields(s) }

	bash := func(words ...string) []string {
		return lines(shell("bash", `source <(pibake completion bash)
COMP_WORDS=(`+strings.Join(quoteAll(words), " ")+`); COMP_CWORD=`+strconv.Itoa(len(words)-1)+`; _pibake; printf '%s\n' "${COMPREPLY[@]}"`))
	}
	zsh := func(words ...string) []string {
		return lines(shell("zsh", `compadd() { shift; print -l -- "$@"; }; _files() { print FILES; }
source <(pibake completion zsh)
words=(`+strings.Join(quoteAll(words), " ")+`); CURRENT=`+strconv.Itoa(len(words))+`; _pibake`))
	}
	fish := func(line string) []string {
		return lines(shell("fish", `pibake completion fish | source; complete -C "`+line+`"`))
	}
	for _, tc := range []struct {
		name string
		got  []string
		want []string
	}{
		{"bash command", bash("pibake", "bu"), []string{"build"}},
		{"bash node", bash("pibake", "build", labRecipe, "--node", "pi-a"), []string{"pi-agent", "pi-agent-1", "pi-agent-2"}},
		{"bash flag", bash("pibake", "build", "--for"), []string{"--force"}},
		{"zsh node", zsh("pibake", "build", labRecipe, "--node", ""), []string{"pi-agent", "pi-agent-1", "pi-agent-2", "pi-server"}},
		{"zsh files", zsh("pibake", "inspect", ""), []string{"FILES"}},
		{"fish command", fish("pibake bu"), []string{"build"}},
		{"fish node", fish("pibake build " + labRecipe + " --node pi-s"), []string{"pi-server"}},
		{"fish cache", fish("pibake cache p"), []string{"prune"}},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s: %q; want %q", tc.name, tc.got, tc.want)
		}
	}
}

func quoteAll(words []string) []string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + w + "'"
	}
	return q
}
