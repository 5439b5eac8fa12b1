package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/cli")

// TestRun pins each command's exit code, stdout and stderr. Golden files
// live in testdata/cli/<name>.stdout and .stderr.
func TestRun(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
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
			compareGolden(t, filepath.Join("testdata", "cli", tt.name+".stdout"), stdout.Bytes())
			compareGolden(t, filepath.Join("testdata", "cli", tt.name+".stderr"), stderr.Bytes())
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

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (go test ./cmd/pibake -update creates it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test ./cmd/pibake -update rewrites it):\n--- got ---\n%s--- want ---\n%s", path, got, want)
	}
}
