package main

import (
	"bytes"
	"context"
	"github.com/pibake/pibake/internal/golden"
	"path/filepath"
	"strings"
	"testing"
)

// TestRun pins each command's exit code, stdout and stderr. Golden files
// live in testdata/cli/<name>.stdout and .stderr.
func TestRun(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // fetch never touches the real cache
	t.Setenv("K3S_TOKEN", "cli-test-token-0123456789")
	t.Setenv("K3S_AGENT_TOKEN", "cli-test-agent-token-0123456789")
	const lab = "../../recipes/examples/lab.hcl"
	tests := []struct {
		name string
		args []string
		code int
	}{
		{name: "no_args", args: nil, code: exitUsage},
		{name: "help", args: []string{"help"}, code: exitOK},
		{name: "help_flag", args: []string{"--help"}, code: exitOK},
		{name: "help_validate", args: []string{"help", "validate"}, code: exitOK},
		{name: "help_unknown", args: []string{"help", "bake"}, code: exitUsage},
		{name: "unknown_command", args: []string{"bake"}, code: exitUsage},
		{name: "validate_help", args: []string{"validate", "--help"}, code: exitOK},
		{name: "validate_lab", args: []string{"validate", lab}, code: exitOK},
		{name: "validate_invalid", args: []string{"validate", "testdata/cli/invalid.hcl"}, code: exitFailure},
		{name: "validate_warnings", args: []string{"validate", "testdata/cli/warnings.hcl"}, code: exitOK},
		{name: "validate_missing", args: []string{"validate", "testdata/cli/missing.hcl"}, code: exitFailure},
		{name: "validate_no_recipe", args: []string{"validate"}, code: exitUsage},
		{name: "validate_bad_flag", args: []string{"validate", "--jsn", lab}, code: exitUsage},
		{name: "plan_lab", args: []string{"plan", lab}, code: exitOK},
		{name: "plan_ha_json", args: []string{"plan", "--json", "../../recipes/examples/ha.hcl"}, code: exitOK},
		{name: "plan_help", args: []string{"plan", "-h"}, code: exitOK},
		{name: "plan_invalid", args: []string{"plan", "testdata/cli/invalid.hcl"}, code: exitFailure},
		{name: "inspect_not_an_image", args: []string{"inspect", "testdata/cli/invalid.hcl"}, code: exitFailure},
		{name: "inspect_no_args", args: []string{"inspect"}, code: exitUsage},
		{name: "fetch_bad_source", args: []string{"fetch", "ftp://example.org/a.img.xz"}, code: exitFailure},
		{name: "fetch_missing_file", args: []string{"fetch", "testdata/missing.img.xz"}, code: exitFailure},
		{name: "cache_bad_verb", args: []string{"cache", "clean"}, code: exitUsage},
		{name: "build_unknown_node", args: []string{"build", lab, "--node", "pi-99"}, code: exitUsage},
		{name: "build_missing_image", args: []string{"build", lab, "--image", "testdata/missing.img", "--out", "testdata/never"}, code: exitFailure},
		{name: "build_no_recipe", args: []string{"build"}, code: exitUsage},
		{name: "version_extra_arg", args: []string{"version", "now"}, code: exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("pibake %s: exit %d; want %d\nstderr:\n%s", strings.Join(tt.args, " "), code, tt.code, stderr.String())
			}
			for _, s := range []string{"cli-test-token", "cli-test-agent-token", "too-short"} {
				if strings.Contains(stdout.String()+stderr.String(), s) {
					t.Errorf("pibake %s printed the secret %q", strings.Join(tt.args, " "), s)
				}
			}
			golden.Compare(t, filepath.Join("testdata", "cli", tt.name+".stdout"), stdout.Bytes())
			golden.Compare(t, filepath.Join("testdata", "cli", tt.name+".stderr"), stderr.Bytes())
		})
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("pibake version: exit %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "pibake ") || stderr.Len() != 0 {
		t.Errorf("pibake version printed %q, %q", stdout.String(), stderr.String())
	}
}
