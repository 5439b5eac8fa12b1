package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/identity"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/testimage"
)

// TestGeneratedCACommands: build with cluster.ca = "generate" writes the
// kubeconfig and says how to use it; plan and inspect show which node
// carries the CA and which hash the others pin, and never a key or a
// token; --rotate-node-password for an unknown node is a usage error.
func TestGeneratedCACommands(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	base := testimage.For(t, buildtest.SmallBookworm())
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	recipe := filepath.Join(dir, "lab.hcl")
	const token, agentToken = "ca-cli-test-token-0123456789", "ca-cli-agent-token-9876543210"
	src := fmt.Sprintf(`image {
  source = %q
}
cluster {
  name        = "lab"
  token       = %q
  agent_token = %q
  ca          = "generate"
}
node "srv" {
  role = "server"
  ip   = "192.168.7.10/24"
}
node "agent" {
  role = "agent"
}
`, base, token, agentToken)
	if err := os.WriteFile(recipe, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	// Everything every command printed, checked at the end for every
	// secret the build made or was given.
	printed := map[string]string{}
	pibake := func(args ...string) (string, string, int) {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), args, &stdout, &stderr)
		printed[strings.Join(args, " ")] += stdout.String() + stderr.String()
		return stdout.String(), stderr.String(), code
	}
	defer func() {
		secrets := []string{token, agentToken, "PRIVATE KEY"}
		for _, host := range []string{"srv", "agent"} {
			for gen := range 2 {
				secrets = append(secrets, identity.NodePassword(token, "lab", host, gen))
			}
		}
		keys, _ := filepath.Glob(filepath.Join(out, ".pibake/ca/*.key"))
		more, _ := filepath.Glob(filepath.Join(out, ".pibake/ca/etcd/*.key"))
		if len(keys)+len(more) < 6 {
			t.Errorf("found %d CA keys to look for; want at least 6", len(keys)+len(more))
		}
		for _, key := range append(keys, more...) {
			pem, err := os.ReadFile(key)
			if err != nil {
				t.Fatal(err)
			}
			// Every base64 line of the key, as it would show if printed.
			for _, line := range strings.Split(string(pem), "\n") {
				if len(line) >= 40 && !strings.HasPrefix(line, "-----") {
					secrets = append(secrets, line)
				}
			}
		}
		if len(printed) < 6 {
			t.Errorf("only %d commands ran", len(printed))
		}
		for args, all := range printed {
			for _, secret := range secrets {
				if strings.Contains(all, secret) {
					t.Errorf("pibake %s printed a secret: %q", args, secret)
				}
			}
		}
	}()

	stdout, stderr, code := pibake("plan", "--out", out, recipe)
	if code != exitOK || !strings.Contains(stdout, "made at the first build") || !strings.Contains(stdout, "founds the cluster, carries the CA") || !strings.Contains(stdout, "https://192.168.7.10:6443, pins the CA") {
		t.Errorf("plan before the first build: exit %d\n%s%s", code, stdout, stderr)
	}
	_, stderr, code = pibake("build", "--cache", filepath.Join(dir, "cache"), "--out", out, recipe)
	if code != exitOK || !strings.Contains(stderr, "kubectl --kubeconfig "+filepath.Join(out, "lab.kubeconfig")+" get nodes") {
		t.Fatalf("build: exit %d\n%s", code, stderr)
	}
	hash := regexp.MustCompile(`sha256 ([0-9a-f]{64})`)
	stdout, _, _ = pibake("plan", "--out", out, recipe)
	m := hash.FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("plan after the build shows no CA hash:\n%s", stdout)
	}
	for host, want := range map[string]string{
		"srv":   "carries the cluster CA keys (sha256 " + m[1] + ")",
		"agent": "joins with a token pinning the cluster CA sha256 " + m[1],
	} {
		stdout, stderr, code := pibake("inspect", filepath.Join(out, host+".img"))
		if code != exitOK || !strings.Contains(stdout, want) || !strings.Contains(stdout, "sets /etc/rancher/node/password") {
			t.Errorf("inspect %s: exit %d; want %q\n%s%s", host, code, want, stdout, stderr)
		}
	}
	// The machine-readable outputs, a rotation and a validation, for the
	// secret check at the end.
	for _, args := range [][]string{
		{"plan", "--json", "--out", out, recipe},
		{"inspect", "--json", filepath.Join(out, "srv.img")},
		{"inspect", "--json", filepath.Join(out, "agent.img")},
		{"validate", recipe},
		{"build", "--cache", filepath.Join(dir, "cache"), "--out", out, "--node", "agent", "--rotate-node-password", "agent", recipe},
	} {
		if stdout, stderr, code := pibake(args...); code != exitOK {
			t.Errorf("pibake %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	_, stderr, code = pibake("build", "--cache", filepath.Join(dir, "cache"), "--out", out, "--rotate-node-password", "pi-99", recipe)
	if code != exitUsage || !strings.Contains(stderr, `unknown node "pi-99"`) {
		t.Errorf("rotate an unknown node: exit %d\n%s", code, stderr)
	}
}

// TestProgressOnATerminal runs pibake build under a real pseudo-terminal
// (script(1)): bars are drawn (cursor movements), the log lines and the
// summary still come through, and the build succeeds; with --quiet,
// nothing but the summary's absence and the paths.
func TestProgressOnATerminal(t *testing.T) {
	scriptTool := testimage.Tool(t, "script")
	xzTool := testimage.Tool(t, "xz")
	base := testimage.For(t, buildtest.SmallBookworm())
	if out, err := exec.Command(xzTool, "-T2", "-0", "--block-size=8MiB", base).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v\n%s", err, out)
	}
	self, _ := os.Executable()
	dir := t.TempDir()
	recipe := filepath.Join(dir, "lab.hcl")
	os.WriteFile(recipe, []byte("cluster {\n  token = \"tty-test-token-0123456789\"\n}\nnode \"srv\" {\n  role = \"server\"\n}\n"), 0o600)
	run := func(extra ...string) string {
		args := append([]string{self, "build", recipe, "--image", base + ".xz", "--cache", filepath.Join(dir, "cache"), "--out", filepath.Join(dir, "out"), "--compress", "--force"}, extra...)
		// A pseudo-terminal with a size, as a terminal window has.
		cmd := exec.Command(scriptTool, "-qec", "stty cols 120 rows 40; "+strings.Join(args, " "), "/dev/null")
		cmd.Env = append(os.Environ(), "PIBAKE_TEST_AS_PIBAKE=1", "TERM=xterm", "NO_COLOR=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pibake build on a terminal: %v\n%s", err, out)
		}
		return string(out)
	}
	out := run()
	for _, want := range []string{"decompressing", "srv: done in", "\x1b[1A", "decompress  [", "NODE", "srv.img.xz"} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, out)
		}
	}
	quiet := run("-q")
	if strings.Contains(quiet, "\x1b[") || strings.Contains(quiet, "done in") {
		t.Errorf("--quiet drew progress or logged:\n%q", quiet)
	}
}
