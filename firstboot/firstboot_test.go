package firstboot

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/golden"
	"github.com/pibake/pibake/internal/testimage"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/recipes"
)

const (
	testToken      = "golden-token-0123456789abcdef"
	testAgentToken = "golden-agent-token-fedcba987654"
	testPSK        = "golden-wifi-passphrase"
)

// loadRecipe loads an inline recipe; airgap files, if named, are created.
func loadRecipe(t *testing.T, src string) *recipes.Recipe {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"k3s-arm64", "k3s-airgap-images-arm64.tar.zst", "install.sh"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "lab.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	r, diags := recipes.Load(hclparse.NewParser(), path)
	if diags.HasErrors() {
		t.Fatalf("recipe: %v", diags)
	}
	return r
}

const haRecipe = `
cluster {
  token       = "golden-token-0123456789abcdef"
  agent_token = "golden-agent-token-fedcba987654"
  k3s_version = "v1.31.4+k3s1"
  tls_san     = ["k3s.lab.example"]
  agent_join_batch = 2
}
node "cp" {
  role   = "server"
  count  = 3
  ip     = "192.168.1.${10 + count.index}/24"
  gateway = "192.168.1.1"
  dns    = ["192.168.1.1", "1.1.1.1"]
  labels = { zone = "rack" }
  k3s_args = ["--disable=traefik", "--kubelet-arg=max-pods=50"]
}
node "worker" {
  role  = "agent"
  count = 8
  taints = ["dedicated=edge:NoSchedule"]
  apt {
    packages      = ["vim", "open-iscsi"]
    modules_extra = true
    upgrade       = true
  }
  user {
    name                = "ops"
    password_hash       = "$6$golden$hashhashhashhashhashhashhashhashhashhashhashhashhashhashhashhashhashhashhashhashhash"
    ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn4lC6ZnWsLqtCQ8ki7SIqNvLZPc0xk1pB9uJZbAFkf ops@lab"]
  }
  ssh = true
}
`

const singleRecipe = `
cluster {
  token = "golden-token-0123456789abcdef"
}
node "pi" {
  role     = "server"
  timezone = "Europe/Berlin"
}
node "wifi" {
  role   = "agent"
  server = "pi.lan"
  ip     = "10.0.0.20/24"
  wifi {
    ssid    = "lab net"
    psk     = "golden-wifi-passphrase"
    country = "de"
  }
}
`

// reportRecipe: every node reports to the cluster's URL but the agent,
// which names its own.
const reportRecipe = `
cluster {
  token = "golden-token-0123456789abcdef"
  report {
    url = "http://192.168.1.5:8470"
  }
}
node "pi" {
  role = "server"
}
node "edge" {
  role   = "agent"
  server = "pi.lan"
  report {
    url = "https://watch.example.net/pibake/"
  }
}
`

// testReportKey stands for the node key the builder derives.
const testReportKey = "7265706f72742d6b65792d666f722d746865676f6c64656e2d746573742d2d21"

const staticRecipe = `
cluster {
  token = "golden-token-0123456789abcdef"
}
node "pi" {
  role    = "server"
  ip      = "10.0.0.10/24"
  gateway = "10.0.0.1"
  dns     = ["10.0.0.1"]
  ssh     = true
  user {
    name                = "ops"
    ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn4lC6ZnWsLqtCQ8ki7SIqNvLZPc0xk1pB9uJZbAFkf ops@lab"]
  }
}
`

const airgapRecipe = `
cluster {
  token = "golden-token-0123456789abcdef"
  airgap {
    k3s_binary     = "k3s-arm64"
    images         = "k3s-airgap-images-arm64.tar.zst"
    install_script = "install.sh"
  }
}
node "pi" {
  role = "server"
  ip   = "10.0.0.10/24"
}
`

var goldenCases = []struct {
	name   string
	recipe string
	node   string
	opt    Options
}{
	{name: "single_server", recipe: singleRecipe, node: "pi"},
	{name: "founding_ha_server", recipe: haRecipe, node: "cp-1"},
	{name: "joining_server", recipe: haRecipe, node: "cp-2"},
	{name: "agent", recipe: haRecipe, node: "worker-1"},
	{name: "fleet_agent_batch_3", recipe: haRecipe, node: "worker-7"},
	{name: "static_ip", recipe: staticRecipe, node: "pi"},
	{name: "wifi", recipe: singleRecipe, node: "wifi"},
	{name: "airgap", recipe: airgapRecipe, node: "pi"},
	{name: "cloud_init", recipe: singleRecipe, node: "wifi", opt: Options{Base: Base{CloudInit: true, SystemdFirstBoot: true}}},
	{name: "ca_founding_server", recipe: haRecipe, node: "cp-1", opt: Options{CAHash: testCAHash, CAFiles: fakeCAFiles(), NodePassword: "0123456789abcdef0123456789abcdef"}},
	{name: "ca_joining_server", recipe: haRecipe, node: "cp-2", opt: Options{CAHash: testCAHash, JoinToken: "K10" + testCAHash + "::server:" + testToken, NodePassword: "fedcba9876543210fedcba9876543210"}},
	{name: "report_server", recipe: reportRecipe, node: "pi", opt: Options{ReportKey: testReportKey}},
	{name: "report_agent_own_url", recipe: reportRecipe, node: "edge", opt: Options{ReportKey: testReportKey}},
	{name: "ca_agent", recipe: haRecipe, node: "worker-1", opt: Options{CAHash: testCAHash, JoinToken: "K10" + testCAHash + "::node:" + testAgentToken, NodePassword: "00112233445566778899aabbccddeeff"}},
	{name: "profile_pi5_nvme_apply", recipe: profileRecipe, node: "nvme"},
	{name: "profile_pi4_usb_quirk", recipe: profileRecipe, node: "usb", opt: Options{Base: Base{CloudInit: true, SystemdFirstBoot: true}}},
}

const testCAHash = "5f1c0c5b6a1e0b6b5cf6ad8b0e3f0e6d3f4b0c2a9d8e7f6a5b4c3d2e1f0a9b8c"

// fakeCAFiles stand for the CA files the builder passes (their content is
// the identity package's business): the names k3s reads from server/tls.
func fakeCAFiles() map[string][]byte {
	files := map[string][]byte{"service.key": []byte("-----BEGIN RSA PRIVATE KEY-----\nfake service key\n-----END RSA PRIVATE KEY-----\n")}
	for _, ca := range []string{"server-ca", "client-ca", "request-header-ca", "etcd/peer-ca", "etcd/server-ca"} {
		files[ca+".crt"] = []byte("-----BEGIN CERTIFICATE-----\nfake " + ca + "\n-----END CERTIFICATE-----\n")
		files[ca+".key"] = []byte("-----BEGIN EC PRIVATE KEY-----\nfake " + ca + " key\n-----END EC PRIVATE KEY-----\n")
	}
	return files
}

func findNode(t *testing.T, r *recipes.Recipe, host string) *recipes.Node {
	t.Helper()
	for i := range r.Nodes {
		if r.Nodes[i].Hostname == host {
			return &r.Nodes[i]
		}
	}
	t.Fatalf("no node %s", host)
	return nil
}

// renderFor renders the payload of one node of an inline recipe.
func renderFor(t *testing.T, recipe, host string, opt Options) Payload {
	t.Helper()
	r := loadRecipe(t, recipe)
	p, err := Render(&r.Cluster, findNode(t, r, host), opt)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// dump renders a payload as text: the cmdline arguments, then every file.
// The fixed scripts are the same for every node and are their own source
// (templates/), so a golden file names them without their content: an
// edit of a script changes no golden file.
func dump(p Payload) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "method: %s\ncmdline add: %s\n", p.Method, strings.Join(p.CmdlineAdd, " "))
	if p.ConfigTxt != nil {
		fmt.Fprintf(&b, "-- config.txt block --\n%s\n", strings.Join(p.ConfigTxt, "\n"))
	}
	for _, f := range p.Files {
		switch {
		case f.Source != "":
			fmt.Fprintf(&b, "-- %s (%#o) from %s --\n", f.Path, f.Mode, filepath.Base(f.Source))
		case isFixed(f):
			fmt.Fprintf(&b, "-- %s (%#o) = templates/%s --\n", f.Path, f.Mode, path.Base(f.Path))
		default:
			fmt.Fprintf(&b, "-- %s (%#o) --\n%s", f.Path, f.Mode, f.Data)
		}
	}
	return b.Bytes()
}

// isFixed reports whether f is one of the fixed scripts, byte for byte.
func isFixed(f File) bool {
	b, err := templateFS.ReadFile("templates/" + path.Base(f.Path))
	return err == nil && path.Dir(f.Path) == Dir && bytes.Equal(b, f.Data)
}

func TestRenderGolden(t *testing.T) {
	for _, tt := range goldenCases {
		t.Run(tt.name, func(t *testing.T) {
			opt := tt.opt
			opt.BuildID = "build-0001"
			p := renderFor(t, tt.recipe, tt.node, opt)
			golden.Compare(t, filepath.Join("testdata", tt.name+".golden"), dump(p))
			for _, f := range p.Files {
				secret := bytes.Contains(f.Data, []byte(testToken)) || bytes.Contains(f.Data, []byte(testAgentToken)) ||
					bytes.Contains(f.Data, []byte(testPSK)) || bytes.Contains(f.Data, []byte("$6$golden"))
				secret = secret || strings.HasSuffix(f.Path, ".key") || strings.HasSuffix(f.Path, "node-password")
				if secret && f.Mode != 0o600 {
					t.Errorf("%s holds a secret but has mode %#o; want 0600", f.Path, f.Mode)
				}
			}
		})
	}
}

func TestAgentCarriesAgentToken(t *testing.T) {
	r := loadRecipe(t, haRecipe)
	cfg := string(k3sConfig(&r.Cluster, findNode(t, r, "worker-1"), testToken, ""))
	if strings.Contains(cfg, testToken) || !strings.Contains(cfg, testAgentToken) {
		t.Errorf("agent config carries the wrong token:\n%s", cfg)
	}
	for _, key := range []string{"cluster-init", "tls-san", "flannel-backend", "cluster-cidr", "agent-token", "write-kubeconfig-mode"} {
		if strings.Contains(cfg, key+":") {
			t.Errorf("agent config has the server-only key %s", key)
		}
	}
}

// TestCAOnlyOnTheFoundingServer: CA files for a node that joins are a
// builder bug, refused rather than written.
func TestCAOnlyOnTheFoundingServer(t *testing.T) {
	r := loadRecipe(t, haRecipe)
	_, err := Render(&r.Cluster, findNode(t, r, "cp-2"), Options{Token: testToken, CAFiles: fakeCAFiles()})
	if err == nil || !strings.Contains(err.Error(), "only the founding server carries the CA") {
		t.Errorf("Render of a joining server with CA files: %v", err)
	}
}

// TestJoinToken: joiners carry the full token; the founding server keeps
// the plain secret it starts the cluster with (k3s's docs/cli/token.md:
// the first server takes only the short form unless it already has the
// CA, and pibake does not rely on that).
func TestJoinToken(t *testing.T) {
	r := loadRecipe(t, haRecipe)
	full := "K10" + testCAHash + "::server:" + testToken
	for host, want := range map[string]string{"cp-1": `token: "` + testToken + `"`, "cp-2": `token: "` + full + `"`, "worker-1": `token: "` + full + `"`} {
		cfg := string(k3sConfig(&r.Cluster, findNode(t, r, host), testToken, full))
		if !strings.Contains(cfg, want+"\n") {
			t.Errorf("%s config lacks %s:\n%s", host, want, cfg)
		}
	}
}

func TestGeneratedToken(t *testing.T) {
	r := loadRecipe(t, "node \"pi\" {\n  role = \"server\"\n}\n")
	if _, err := Render(&r.Cluster, &r.Nodes[0], Options{}); err == nil {
		t.Error("Render without any token succeeded")
	}
	p, err := Render(&r.Cluster, &r.Nodes[0], Options{Token: "generated-0123456789abcdef"})
	if err != nil || !strings.Contains(string(dump(p)), `token: "generated-0123456789abcdef"`) {
		t.Errorf("Render with a generated token: %v\n%s", err, dump(p))
	}
}

// TestChooseMethod is the one place "auto" is decided, and where a method
// that cannot work on a base image is refused with the reason.
func TestChooseMethod(t *testing.T) {
	bookworm := Base{}
	trixie := Base{CloudInit: true, SystemdFirstBoot: true}
	trixieNoCloudInit := Base{SystemdFirstBoot: true}
	bookwormWithCloudInit := Base{CloudInit: true}
	tests := []struct {
		method recipes.Method
		base   Base
		want   recipes.Method
		err    string
	}{
		{method: recipes.MethodAuto, base: bookworm, want: recipes.MethodSystemdRun},
		{method: recipes.MethodAuto, base: trixie, want: recipes.MethodCloudInit},
		{method: recipes.MethodAuto, base: bookwormWithCloudInit, want: recipes.MethodCloudInit},
		{method: recipes.MethodAuto, base: trixieNoCloudInit, err: "no safe first-boot method"},
		{method: recipes.MethodSystemdRun, base: bookworm, want: recipes.MethodSystemdRun},
		{method: recipes.MethodSystemdRun, base: bookwormWithCloudInit, want: recipes.MethodSystemdRun},
		{method: recipes.MethodSystemdRun, base: trixie, err: "would never grow"},
		{method: recipes.MethodCloudInit, base: trixie, want: recipes.MethodCloudInit},
		{method: recipes.MethodCloudInit, base: bookworm, err: "no cloud-init"},
		{method: "rc.local", base: bookworm, err: "unknown first-boot method"},
	}
	for _, tt := range tests {
		got, err := ChooseMethod(tt.method, tt.base)
		if got != tt.want || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("ChooseMethod(%s, %+v) = %q, %v; want %q, error with %q", tt.method, tt.base, got, err, tt.want, tt.err)
		}
	}
}

// TestShellcheck runs shellcheck as POSIX sh on every rendered script.
func TestShellcheck(t *testing.T) {
	shellcheck := requireTool(t, "shellcheck")
	p := renderFor(t, haRecipe, "worker-1", Options{BuildID: "b"})
	dir := t.TempDir()
	var scripts []string
	for _, f := range p.Files {
		if strings.HasSuffix(f.Path, ".sh") || strings.HasSuffix(f.Path, ".env") {
			name := filepath.Join(dir, filepath.Base(f.Path))
			if err := os.WriteFile(name, f.Data, 0o644); err != nil {
				t.Fatal(err)
			}
			scripts = append(scripts, name)
		}
	}
	if len(scripts) != 6 {
		t.Fatalf("found %d scripts; want activate.sh, bootfacts.sh, firstboot.sh, lib.sh, node.env, report.sh", len(scripts))
	}
	// -x follows the scripts' "source=lib.sh" into the shared functions.
	cmd := exec.Command(shellcheck, append([]string{"-x", "-s", "sh", "-S", "style"}, scripts...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// TestUnitVerifies runs systemd-analyze verify on each of pibake's units,
// and on a copy with a mistake in it, to show that the check sees mistakes
// on this machine (verify exits 0 on warnings, and reports the host's own
// units too, so the lines about ours are what counts).
func TestUnitVerifies(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze")
	p := renderFor(t, haRecipe, "cp-1", Options{BuildID: "b"})
	units := map[string][]byte{}
	for _, f := range p.Files {
		if strings.HasSuffix(f.Path, ".service") {
			units[path.Base(f.Path)] = f.Data
		}
	}
	if len(units) != 2 {
		t.Fatalf("found units %v; want pibake-firstboot.service and pibake-report.service", slices.Collect(maps.Keys(units)))
	}
	for name, unit := range units {
		verify := func(data []byte) (problems string, err error) {
			path := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
			var ours []string
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, strings.TrimSuffix(name, ".service")) {
					ours = append(ours, line)
				}
			}
			return strings.Join(ours, "\n"), err
		}
		if problems, err := verify(unit); problems != "" || err != nil {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, problems)
		}
		broken := regexp.MustCompile(`RestartSec=\d+`).ReplaceAll(unit, []byte("RestartSec=sixty"))
		if bytes.Equal(broken, unit) {
			t.Fatalf("%s has no RestartSec= to break", name)
		}
		if problems, _ := verify(broken); !strings.Contains(problems, "sixty") {
			t.Errorf("systemd-analyze verify did not report RestartSec=sixty in %s; the check cannot see mistakes here:\n%s", name, problems)
		}
	}
}

// requireTool finds a checking tool, by the one rule for a missing tool
// (testimage.Tool).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	return testimage.Tool(t, name)
}
