package completion

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spf13/pflag"
)

// TestCandidatesFromFlags answers from the commands' own flag sets: the
// command names, a command's flags, a flag's values, fixed words, file
// names, nothing for a command without arguments or an unknown one.
func TestCandidatesFromFlags(t *testing.T) {
	cmds := map[string]Command{
		"build": {Flags: func(fs *pflag.FlagSet) {
			fs.BoolP("force", "f", false, "")
			fs.String("out", "", "")
			fs.Duration("older-than", 0, "")
		}},
		"cache":   {Flags: func(*pflag.FlagSet) {}, Words: []string{"list", "prune"}},
		"version": {Flags: func(*pflag.FlagSet) {}, NoArgs: true},
	}
	for _, tc := range []struct {
		words, want []string
	}{
		{[]string{""}, []string{"--help", "--version", "build", "cache", "help", "version"}},
		{[]string{"help", ""}, []string{"build", "cache", "version"}},
		{[]string{"build", "-"}, []string{"--force", "--older-than", "--out", "-f", "--help"}},
		{[]string{"build", "--older-than", ""}, []string{"24h", "168h", "720h"}},
		{[]string{"build", "--out", ""}, []string{Files}},
		{[]string{"build", "--force", ""}, []string{Files}},
		{[]string{"cache", ""}, []string{"list", "prune"}},
		{[]string{"version", ""}, nil},
		{[]string{"bake", ""}, nil},
	} {
		if got := Candidates(tc.words, cmds); !slices.Equal(got, tc.want) {
			t.Errorf("Candidates(%q) = %q; want %q", tc.words, got, tc.want)
		}
	}
	if got := Shells(); !slices.Equal(got, []string{"bash", "fish", "zsh"}) {
		t.Errorf("Shells() = %q", got)
	}
}

// TestNodesOfARecipeThatDoesNotLoad: a recipe whose env() names a
// variable unset in the shell does not load, yet --node still completes
// its node blocks' labels, literal hostnames and counted names, and
// completion prints nothing else.
func TestNodesOfARecipeThatDoesNotLoad(t *testing.T) {
	recipe := filepath.Join(t.TempDir(), "lab.hcl")
	src := `cluster {
  token = env("PIBAKE_TEST_UNSET_TOKEN")
}
node "pi-server" {
  role     = "server"
  hostname = "control"
}
node "pi-agent" {
  role  = "agent"
  count = 2
}
node "edge" {
  role  = "agent"
  count = length(["a", "b"])
}
`
	if err := os.WriteFile(recipe, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Unsetenv("PIBAKE_TEST_UNSET_TOKEN")
	cmds := map[string]Command{"build": {Flags: func(fs *pflag.FlagSet) {
		fs.StringArray("node", nil, "")
		fs.Bool("force", false, "")
	}}}
	want := []string{"control", "edge", "pi-agent", "pi-agent-1", "pi-agent-2", "pi-server"}
	for _, dir := range []bool{false, true} {
		path := recipe
		if dir {
			path = filepath.Dir(recipe)
		}
		if got := Candidates([]string{"build", "--force", path, "--node", ""}, cmds); !slices.Equal(got, want) {
			t.Errorf("--node of %s = %q; want %q", path, got, want)
		}
	}
}
