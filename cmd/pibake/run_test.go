package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/golden"
	"github.com/pibake/pibake/internal/neterr"
)

// TestRun pins each command's exit code, stdout and stderr. Golden files
// live in testdata/cli/<name>.stdout and .stderr.
func TestRun(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // fetch never touches the real cache
	t.Setenv("K3S_TOKEN", "cli-test-token-0123456789")
	t.Setenv("K3S_AGENT_TOKEN", "cli-test-agent-token-0123456789")
	home, _ := filepath.Abs("../../recipes/testdata/home") // the examples' ssh_public_keys()
	t.Setenv("HOME", home)
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
		{name: "unknown_command_typo", args: []string{"buld", "lab.hcl"}, code: exitUsage},
		{name: "validate_help", args: []string{"validate", "--help"}, code: exitOK},
		{name: "validate_lab", args: []string{"validate", lab}, code: exitOK},
		{name: "validate_invalid", args: []string{"validate", "testdata/cli/invalid.hcl"}, code: exitFailure},
		{name: "validate_warnings", args: []string{"validate", "testdata/cli/warnings.hcl"}, code: exitOK},
		{name: "validate_not_text", args: []string{"validate", "testdata/cli/not-text.hcl"}, code: exitFailure},
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
		{name: "build_out_is_a_file", args: []string{"build", lab, "--image", "testdata/cli/invalid.hcl", "--out", "testdata/cli/invalid.hcl/sub"}, code: exitFailure},
		{name: "build_unknown_alias", args: []string{"build", lab, "--image", "raspios_lite_arm64:lates", "--out", "testdata/never"}, code: exitFailure},
		{name: "version_extra_arg", args: []string{"version", "now"}, code: exitUsage},
		{name: "help_help", args: []string{"help", "--help"}, code: exitOK},
		{name: "cache_list_all", args: []string{"cache", "list", "--all"}, code: exitUsage},
		{name: "cache_prune_negative", args: []string{"cache", "prune", "--older-than", "-1h"}, code: exitUsage},
		{name: "cache_prune_all_older_than", args: []string{"cache", "prune", "--all", "--older-than", "1h"}, code: exitUsage},
		{name: "build_rotate_unknown", args: []string{"build", lab, "--rotate-node-password", "pi-99"}, code: exitUsage},
		{name: "build_rotate_not_selected", args: []string{"build", lab, "--node", "pi-server", "--rotate-node-password", "pi-agent-1"}, code: exitUsage},
		{name: "build_help", args: []string{"build", "--help"}, code: exitOK},
		{name: "flash_help", args: []string{"flash", "--help"}, code: exitOK},
		{name: "flash_no_targets", args: []string{"flash", lab}, code: exitUsage},
		{name: "flash_not_a_pair", args: []string{"flash", lab, "/dev/sdb"}, code: exitUsage},
		{name: "flash_no_such_device", args: []string{"flash", lab, "pi-server=/dev/pibake-no-such-disk"}, code: exitFailure},
		{name: "flash_directory", args: []string{"flash", lab, "pi-server=testdata"}, code: exitFailure},
		{name: "flash_missing_image", args: []string{"flash", "testdata/missing.img.xz", "testdata/never.img"}, code: exitFailure},
		{name: "verify_help", args: []string{"verify", "--help"}, code: exitOK},
		{name: "verify_no_args", args: []string{"verify"}, code: exitUsage},
		{name: "verify_missing", args: []string{"verify", "testdata/missing.img"}, code: exitFailure},
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
	var want string
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != exitOK {
			t.Fatalf("pibake %s: exit %d: %s", args[0], code, stderr.String())
		}
		if !strings.HasPrefix(stdout.String(), "pibake ") || stderr.Len() != 0 {
			t.Errorf("pibake %s printed %q, %q", args[0], stdout.String(), stderr.String())
		}
		if want == "" {
			want = stdout.String()
		} else if stdout.String() != want {
			t.Errorf("pibake %s printed %q; pibake version %q", args[0], stdout.String(), want)
		}
	}
}

// TestReportError: failures are said in the user's terms.
func TestReportError(t *testing.T) {
	for _, tc := range []struct {
		name, cmd string
		err       error
		want      []string
		not       []string
	}{
		{name: "interrupted build", cmd: "build", err: fmt.Errorf("node srv: %w", context.Canceled),
			want: []string{"pibake build: interrupted: nodes finished before it stay published"}, not: []string{"context canceled"}},
		{name: "interrupted fetch", cmd: "fetch", err: fmt.Errorf("download: %w", context.Canceled),
			want: []string{"pibake fetch: interrupted\n"}, not: []string{"context canceled", "published"}},
		{name: "offline", cmd: "build", err: fmt.Errorf("base image: %w", &neterr.Unreachable{Err: errors.New("download https://downloads.raspberrypi.com/x: cannot resolve host downloads.raspberrypi.com")}),
			want: []string{"cannot resolve host", "make demo", "--image PATH", "HTTPS_PROXY"}},
		{name: "offline lock", cmd: "lock", err: fmt.Errorf("resolve k3s channel stable: %w", &neterr.Unreachable{Err: errors.New("get https://update.k3s.io/v1-release/channels: cannot resolve host update.k3s.io")}),
			want: []string{"cannot resolve host", "pibake lock asks the OS list and the k3s channel server", "commit the lock file", "--k3s-channels URL", "HTTPS_PROXY"}, not: []string{"make demo"}},
		{name: "other", cmd: "fetch", err: errors.New("image x: checksum mismatch"),
			want: []string{"pibake fetch: image x: checksum mismatch\n"}, not: []string{"make demo", "nothing was built"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			reportError(outputs{stdout: io.Discard, stderr: &stderr}, tc.cmd, tc.err)
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			for _, w := range tc.not {
				if strings.Contains(stderr.String(), w) {
					t.Errorf("stderr has %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}
