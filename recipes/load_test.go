package recipes

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// server is a valid founding server, appended to sources that test
// something else, after the lines whose positions the tests assert.
const server = `
node "srv" {
  role = "server"
  ip   = "192.168.1.10/24"
}
`

// loadSource writes src as recipe.hcl (plus extra files) into a temporary
// directory and loads it.
func loadSource(t *testing.T, src string, extra map[string]string) (*Recipe, hcl.Diagnostics) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range extra {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "recipe.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(hclparse.NewParser(), path)
}

func pos(d *hcl.Diagnostic) string {
	if d.Subject == nil {
		return "-"
	}
	return fmt.Sprintf("%d:%d", d.Subject.Start.Line, d.Subject.Start.Column)
}

func TestLoadFindings(t *testing.T) {
	t.Setenv("PIBAKE_TEST_TOKEN", "0123456789abcdef0123")
	os.Unsetenv("PIBAKE_UNSET_VAR")
	tests := []struct {
		name     string
		src      string
		severity hcl.DiagnosticSeverity
		summary  string
		pos      string // line:column of the subject's start
		detail   string // a fragment the detail must contain
	}{
		{name: "unknown attribute", src: "node \"a\" {\n  rol = \"server\"\n}\n", summary: "Unsupported argument", pos: "2:3", detail: `Did you mean "role"?`},
		{name: "unknown block", src: "nod \"a\" {\n}\n" + server, summary: "Unsupported block type", pos: "1:1", detail: `Did you mean "node"?`},
		{name: "invalid role", src: "node \"a\" {\n  role = \"master\"\n}\n" + server, summary: "Invalid role", pos: "2:10"},
		{name: "missing role", src: "node \"a\" {\n}\n" + server, summary: "Missing role", pos: "1:1"},
		{name: "no server", src: "node \"a\" {\n  role = \"agent\"\n}\n", summary: "No server", pos: "1:1"},
		{name: "no nodes", src: "cluster {\n}\n", summary: "No nodes", pos: "1:1"},
		{name: "hostname not a label", src: "node \"a\" {\n  role = \"agent\"\n  hostname = \"pi_01\"\n}\n" + server, summary: "Invalid hostname", pos: "3:14"},
		{name: "hostname uppercase label", src: "node \"Pi\" {\n  role = \"agent\"\n}\n" + server, summary: "Invalid hostname", pos: "1:6", detail: "lowercase"},
		{name: "duplicate hostname after count", src: "node \"a\" {\n  role = \"agent\"\n  count = 2\n  hostname = \"same\"\n}\n" + server, summary: "Duplicate hostname", pos: "4:14", detail: "A counted block names its nodes <label>-1, <label>-2, …: rename a block, or set hostname with count.index in it."},
		{name: "duplicate hostname case-insensitive", src: server + "node \"b\" {\n  role = \"agent\"\n  hostname = \"srv\"\n}\n", summary: "Duplicate hostname", pos: "8:14", detail: `recipe.hcl:2:6) already has. Every node needs its own hostname. Rename one of the node blocks, or set a hostname in one.`},
		{name: "duplicate hostname of a hand-written node and a counted one", src: server + "node \"worker\" {\n  role = \"agent\"\n  count = 2\n}\nnode \"worker-2\" {\n  role = \"agent\"\n}\n", summary: "Duplicate hostname", pos: "10:6", detail: `Node "worker-2" (node block "worker-2") has the hostname "worker-2", which node "worker-2" (node block "worker", count.index 1) (`},
		{name: "ip without prefix", src: "node \"a\" {\n  role = \"agent\"\n  ip = \"192.168.1.20\"\n}\n" + server, summary: "Invalid IP address", pos: "3:8", detail: "/24"},
		{name: "ip garbage", src: "node \"a\" {\n  role = \"agent\"\n  ip = \"300.1.1.1/24\"\n}\n" + server, summary: "Invalid IP address", pos: "3:8"},
		{name: "ip is network address", src: "node \"a\" {\n  role = \"agent\"\n  ip = \"192.168.1.0/24\"\n}\n" + server, summary: "Invalid IP address", pos: "3:8", detail: "network or broadcast"},
		{name: "duplicate ip", src: server + "node \"b\" {\n  role = \"agent\"\n  ip = \"192.168.1.10/24\"\n}\n", summary: "Duplicate IP address", pos: "8:8"},
		{name: "gateway outside prefix", src: "node \"a\" {\n  role = \"agent\"\n  ip = \"192.168.1.20/24\"\n  gateway = \"192.168.2.1\"\n}\n" + server, summary: "Gateway outside the node's network", pos: "4:13"},
		{name: "gateway without ip", src: "node \"a\" {\n  role = \"agent\"\n  gateway = \"192.168.1.1\"\n}\n" + server, summary: "Gateway without a static IP", pos: "3:13"},
		{name: "agent with nowhere to join", src: "node \"s\" {\n  role = \"server\"\n}\nnode \"a\" {\n  role = \"agent\"\n}\n", summary: "No server address to join", pos: "4:1"},
		{name: "extra server with nowhere to join", src: "node \"s\" {\n  role = \"server\"\n  count = 3\n}\n", summary: "No server address to join", pos: "1:1"},
		{name: "node joins itself", src: "cluster {\n  server_ip = \"192.168.1.20\"\n}\nnode \"a\" {\n  role = \"agent\"\n  ip = \"192.168.1.20/24\"\n}\n" + server, summary: "Node joins itself", pos: "4:1"},
		{name: "server_ip is an agent", src: "cluster {\n  server_ip = \"192.168.1.30\"\n}\nnode \"a\" {\n  role = \"agent\"\n  ip = \"192.168.1.30/24\"\n}\n" + server, summary: "Server address is an agent", pos: "2:15", detail: `agent "a"`},
		{name: "token too short", src: "cluster {\n  token = \"short\"\n}\n" + server, summary: "Invalid token", pos: "2:11", detail: "5 characters"},
		{name: "token with whitespace", src: "cluster {\n  token = \"0123456789 abcdef0123\"\n}\n" + server, summary: "Invalid token", pos: "2:11", detail: "white space"},
		{name: "token K10", src: "cluster {\n  token = \"K10abcdef0123456789::server:abc\"\n}\n" + server, summary: "Invalid token", pos: "2:11", detail: "K10"},
		{name: "bootstrap-shaped token", src: "cluster {\n  token = \"qwerty.asdfghjklzxcvbnm\"\n}\n" + server, summary: "Invalid token", pos: "2:11", detail: "bootstrap"},
		{name: "agent token too short", src: "cluster {\n  agent_token = \"short\"\n}\n" + server, summary: "Invalid agent token", pos: "2:17"},
		{name: "agent token equals token", src: "cluster {\n  token = env(\"PIBAKE_TEST_TOKEN\")\n  agent_token = env(\"PIBAKE_TEST_TOKEN\")\n}\n" + server, summary: "Agent token equals token", pos: "3:17"},
		{name: "unset env", src: "cluster {\n  token = env(\"PIBAKE_UNSET_VAR\")\n}\n" + server, summary: "Error in function call", pos: "2:11", detail: "PIBAKE_UNSET_VAR is not set"},
		{name: "missing file", src: "cluster {\n  token = file(\"nope.txt\")\n}\n" + server, summary: "Error in function call", pos: "2:11", detail: "nope.txt: no such file"},
		{name: "bad k3s version", src: "cluster {\n  k3s_version = \"1.31\"\n}\n" + server, summary: "Invalid k3s version", pos: "2:17"},
		{name: "bad k3s channel", src: "cluster {\n  k3s_channel = \"newest\"\n}\n" + server, summary: "Invalid k3s channel", pos: "2:17"},
		{name: "version and channel", src: "cluster {\n  k3s_version = \"v1.31.4+k3s1\"\n  k3s_channel = \"stable\"\n}\n" + server, summary: "Both k3s_version and k3s_channel set", pos: "3:17"},
		{name: "too many nodes", src: server + "node \"a\" {\n  role = \"agent\"\n  count = 3000\n}\nnode \"b\" {\n  role = \"agent\"\n  count = 2000\n}\n", summary: "Too many nodes", pos: "12:11", detail: "at least 5001 nodes"},
		{name: "recipe too large", src: server + "# " + strings.Repeat("x", 4<<20) + "\n", summary: "Recipe too large", pos: "1:1", detail: "over 4 MiB, the most pibake reads"},
		{name: "bad ca", src: "cluster {\n  ca = \"custom\"\n}\n" + server, summary: "Invalid ca", pos: "2:8", detail: `"generate"`},
		{name: "bad flannel backend", src: "cluster {\n  flannel_backend = \"ipsec\"\n}\n" + server, summary: "Invalid flannel backend", pos: "2:21"},
		{name: "bad cluster cidr", src: "cluster {\n  cluster_cidr = \"10.42.0.0\"\n}\n" + server, summary: "Invalid cluster cidr", pos: "2:18"},
		{name: "cidr with host bits", src: "cluster {\n  service_cidr = \"10.43.0.1/16\"\n}\n" + server, summary: "Invalid service cidr", pos: "2:18", detail: "10.43.0.0/16"},
		{name: "cluster and service cidr overlap", src: "cluster {\n  cluster_cidr = \"10.42.0.0/15\"\n}\n" + server, summary: "Overlapping cluster networks", pos: "2:18"},
		{name: "cluster cidr overlaps node network", src: "node \"a\" {\n  role = \"server\"\n  ip = \"10.42.7.2/16\"\n}\n", summary: "Cluster network overlaps the node network", pos: "3:8"},
		{name: "written cluster cidr overlaps node network", src: "cluster {\n  cluster_cidr = \"192.168.0.0/16\"\n}\n" + server, summary: "Cluster network overlaps the node network", pos: "2:18"},
		{name: "too many nodes for cluster cidr", src: "cluster {\n  cluster_cidr = \"10.42.0.0/16\"\n}\nnode \"a\" {\n  role = \"agent\"\n  count = 300\n}\n" + server, summary: "Cluster network too small", pos: "2:18", detail: "/15"},
		{name: "count zero", src: "node \"a\" {\n  role = \"agent\"\n  count = 0\n}\n" + server, summary: "Invalid count", pos: "3:11"},
		{name: "count fraction", src: "node \"a\" {\n  role = \"agent\"\n  count = 1.5\n}\n" + server, summary: "Invalid count", pos: "3:11"},
		{name: "count refers to itself", src: "node \"a\" {\n  role = \"agent\"\n  count = count.index\n}\n" + server, summary: "Variables not allowed", pos: "3:11"},
		{name: "password not a hash", src: "node \"a\" {\n  role = \"agent\"\n  user {\n    password_hash = \"hunter22\"\n  }\n}\n" + server, summary: "Invalid password hash", pos: "4:21"},
		{name: "md5 password hash", src: "node \"a\" {\n  role = \"agent\"\n  user {\n    password_hash = \"$1$abc$def\"\n  }\n}\n" + server, summary: "Invalid password hash", pos: "4:21"},
		{name: "psk too short", src: "node \"a\" {\n  role = \"agent\"\n  wifi {\n    ssid = \"lab\"\n    psk = \"short\"\n    country = \"DE\"\n  }\n}\n" + server, summary: "Invalid Wi-Fi key", pos: "5:11"},
		{name: "psk 64 chars not hex", src: "node \"a\" {\n  role = \"agent\"\n  wifi {\n    ssid = \"lab\"\n    psk = \"" + strings.Repeat("z", 64) + "\"\n    country = \"DE\"\n  }\n}\n" + server, summary: "Invalid Wi-Fi key", pos: "5:11"},
		{name: "wifi country", src: "node \"a\" {\n  role = \"agent\"\n  wifi {\n    ssid = \"lab\"\n    psk = \"long-enough\"\n    country = \"DEU\"\n  }\n}\n" + server, summary: "Invalid Wi-Fi country", pos: "6:15"},
		{name: "role in defaults", src: "defaults {\n  role = \"agent\"\n}\n" + server, summary: "Attribute not allowed in defaults", pos: "2:10"},
		{name: "reserved label", src: "node \"a\" {\n  role = \"agent\"\n  labels = { \"node-role.kubernetes.io/worker\" = \"true\" }\n}\n" + server, summary: "Reserved label", pos: "3:12"},
		{name: "bad taint", src: "node \"a\" {\n  role = \"agent\"\n  taints = [\"dedicated=edge\"]\n}\n" + server, summary: "Invalid taint", pos: "3:12"},
		{name: "control character in k3s_args", src: "node \"a\" {\n  role = \"agent\"\n  k3s_args = [\"--node-label=a\\nb\"]\n}\n" + server, summary: "Invalid k3s argument", pos: "3:14", detail: "control character"},
		{name: "token in k3s_args", src: "node \"a\" {\n  role = \"agent\"\n  k3s_args = [\"--token=abc\"]\n}\n" + server, summary: "Argument managed by pibake", pos: "3:14"},
		{name: "bad ssh key", src: "node \"a\" {\n  role = \"agent\"\n  user {\n    ssh_authorized_keys = [\"-----BEGIN OPENSSH PRIVATE KEY-----\"]\n  }\n}\n" + server, summary: "Invalid SSH public key", pos: "4:27"},
		{name: "user name with underscore", src: "node \"a\" {\n  role = \"agent\"\n  user {\n    name = \"ops_team\"\n  }\n}\n" + server, summary: "Invalid user name", pos: "4:12", detail: "starting with a letter"},
		{name: "user name starting with a digit", src: "node \"a\" {\n  role = \"agent\"\n  user {\n    name = \"1ops\"\n  }\n}\n" + server, summary: "Invalid user name", pos: "4:12"},
		{name: "user name of 33 characters", src: "node \"a\" {\n  role = \"agent\"\n  user {\n    name = \"" + strings.Repeat("a", 33) + "\"\n  }\n}\n" + server, summary: "Invalid user name", pos: "4:12", detail: "1 to 32"},
		{name: "user name root", src: "node \"a\" {\n  role = \"agent\"\n  user {\n    name = \"root\"\n  }\n}\n" + server, summary: "Invalid user name", pos: "4:12", detail: "not root"},
		{name: "user name in defaults", src: "defaults {\n  user {\n    name = \"Ops\"\n  }\n}\n" + server, summary: "Invalid user name", pos: "3:12"},
		{name: "bad image sha256", src: "image {\n  sha256 = \"abc\"\n}\n" + server, summary: "Invalid sha256", pos: "2:12"},
		{name: "bad image source", src: "image {\n  source = \"ftp://example.org/x.img\"\n}\n" + server, summary: "Invalid image source", pos: "2:12"},
		{name: "install script over http", src: "cluster {\n  install_script_url = \"http://get.k3s.io\"\n}\n" + server, summary: "Invalid install script URL", pos: "2:24"},
		{name: "report URL without a scheme", src: "cluster {\n  report {\n    url = \"192.168.1.5:8470\"\n  }\n}\n" + server, summary: "Invalid report URL", pos: "3:11", detail: "http:// or https://"},
		{name: "report URL with credentials", src: "cluster {\n  report {\n    url = \"http://ops:secret@192.168.1.5:8470\"\n  }\n}\n" + server, summary: "Invalid report URL", pos: "3:11", detail: "credentials"},
		{name: "report URL with a query", src: "node \"a\" {\n  role = \"agent\"\n  report {\n    url = \"http://w:8470/?k=1\"\n  }\n}\n" + server, summary: "Invalid report URL", pos: "4:11", detail: "query"},
		{name: "report URL on loopback", severity: hcl.DiagWarning, src: "cluster {\n  report {\n    url = \"http://127.0.0.1:8470\"\n  }\n}\n" + server, summary: "Report URL is the node itself", pos: "3:11", detail: "every node would report to itself"},
		{name: "report URL on 127.1.2.3", severity: hcl.DiagWarning, src: "node \"a\" {\n  role = \"agent\"\n  report {\n    url = \"https://127.1.2.3\"\n  }\n}\n" + server, summary: "Report URL is the node itself", pos: "4:11"},
		{name: "report URL on localhost", severity: hcl.DiagWarning, src: "cluster {\n  report {\n    url = \"http://LocalHost.:8470\"\n  }\n}\n" + server, summary: "Report URL is the node itself", pos: "3:11"},
		{name: "report URL on ::1", severity: hcl.DiagWarning, src: "cluster {\n  report {\n    url = \"http://[::1]:8470\"\n  }\n}\n" + server, summary: "Report URL is the node itself", pos: "3:11"},
		{name: "report URL on 0.0.0.0", severity: hcl.DiagWarning, src: "cluster {\n  report {\n    url = \"http://0.0.0.0:8470\"\n  }\n}\n" + server, summary: "Report URL is the node itself", pos: "3:11"},
		{name: "report URL on a .localhost name", severity: hcl.DiagWarning, src: "cluster {\n  report {\n    url = \"http://watch.localhost\"\n  }\n}\n" + server, summary: "Report URL is the node itself", pos: "3:11"},
		{name: "report block without url", src: "cluster {\n  report {\n  }\n}\n" + server, summary: "Missing required argument", pos: "2:10"},
		{name: "bad firstboot method", src: "node \"a\" {\n  role = \"agent\"\n  firstboot {\n    method = \"rc.local\"\n  }\n}\n" + server, summary: "Invalid first-boot method", pos: "4:14"},
		{name: "type error", src: "node \"a\" {\n  role = \"agent\"\n  ssh = \"maybe\"\n}\n" + server, summary: "Unsuitable value type", pos: "3:10", detail: "bool is required"},
		{name: "duplicate cluster block", src: "cluster {\n}\ncluster {\n}\n" + server, summary: "Duplicate cluster block", pos: "3:1"},

		{name: "even number of servers", severity: hcl.DiagWarning, src: "node \"s\" {\n  role = \"server\"\n  count = 2\n  ip = \"192.168.1.${10 + count.index}/24\"\n}\n", summary: "Even number of servers", pos: "1:1"},
		{name: "server on sd card", severity: hcl.DiagWarning, src: "node \"s\" {\n  role = \"server\"\n  storage = \"sd\"\n}\n", summary: "Server on an SD card", pos: "3:13"},
		{name: "servers too small", severity: hcl.DiagWarning, src: "cluster {\n  agent_join_batch = 1000\n}\nnode \"s\" {\n  role = \"server\"\n  ip = \"192.168.1.10/24\"\n  hardware {\n    cpus = 2\n    memory_gb = 4\n  }\n}\nnode \"a\" {\n  role = \"agent\"\n  count = 351\n}\n", summary: "Servers too small for the agents", pos: "7:3", detail: "about 350"},
		{name: "nobody can log in", severity: hcl.DiagWarning, src: server, summary: "Nobody can log in", pos: "2:1", detail: `"srv": user "pi" has neither`},
		{name: "nobody can log in with a user block", severity: hcl.DiagWarning, src: "node \"a\" {\n  role = \"agent\"\n  count = 2\n  user {\n    name = \"ops\"\n  }\n}\n" + server, summary: "Nobody can log in", pos: "4:3", detail: `3 nodes of node blocks "a", "srv": user "ops"`},
		{name: "agents join in batches", severity: hcl.DiagWarning, src: "cluster {\n  agent_join_batch = 2\n}\nnode \"a\" {\n  role = \"agent\"\n  count = 3\n}\n" + server, summary: "Agents join in batches", pos: "2:22", detail: "2 batches"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.severity == hcl.DiagInvalid {
				tt.severity = hcl.DiagError
			}
			_, diags := loadSource(t, tt.src, nil)
			var got *hcl.Diagnostic
			for _, d := range diags {
				if d.Summary == tt.summary {
					got = d
					break
				}
			}
			if got == nil {
				t.Fatalf("Load gave no %q finding; got:\n%v", tt.summary, diags)
			}
			if got.Severity != tt.severity {
				t.Errorf("Load(%s): %q has severity %v; want %v", tt.name, tt.summary, got.Severity, tt.severity)
			}
			if pos(got) != tt.pos || !strings.HasSuffix(got.Subject.Filename, "recipe.hcl") {
				t.Errorf("Load(%s) = %q at %s:%s; want at recipe.hcl:%s", tt.name, got.Summary, got.Subject.Filename, pos(got), tt.pos)
			}
			if !strings.Contains(got.Detail, tt.detail) {
				t.Errorf("Load(%s): detail %q does not mention %q", tt.name, got.Detail, tt.detail)
			}
			if tt.severity == hcl.DiagError && !diags.HasErrors() {
				t.Errorf("Load(%s) has no error", tt.name)
			}
			for _, d := range diags {
				if containsAny(d.Detail, "0123456789abcdef0123", "qwerty", "K10abcdef", "hunter22", "long-enough", "0123456789 abcdef", ":secret@") {
					t.Errorf("Load(%s): a diagnostic quotes a secret: %s", tt.name, d.Detail)
				}
			}
		})
	}
}

// TestUsers checks the login user every node gets: the default when the
// recipe has no user block, and who gets passwordless sudo.
func TestUsers(t *testing.T) {
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn4lC6ZnWsLqtCQ8ki7SIqNvLZPc0xk1pB9uJZbAFkf ops@lab"
	const hash = "$6$salt$hash"
	tests := []struct {
		name   string
		user   string // the user block, or "" for none
		want   User
		logsIn bool
	}{
		{name: "no user block", want: User{Name: "pi", Default: true}},
		{name: "keys only", user: `user {
    name = "ops"
    ssh_authorized_keys = ["` + key + `"]
  }`, want: User{Name: "ops", SSHAuthorizedKeys: []string{key}, PasswordlessSudo: true}, logsIn: true},
		{name: "password", user: `user {
    password_hash = "` + hash + `"
  }`, want: User{Name: "pi", PasswordHash: hash}, logsIn: true},
		{name: "keys, sudo asks for nothing explicitly off", user: `user {
    ssh_authorized_keys = ["` + key + `"]
    passwordless_sudo = false
  }`, want: User{Name: "pi", SSHAuthorizedKeys: []string{key}}, logsIn: true},
		{name: "password with passwordless sudo", user: `user {
    password_hash = "` + hash + `"
    passwordless_sudo = true
  }`, want: User{Name: "pi", PasswordHash: hash, PasswordlessSudo: true}, logsIn: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, diags := loadSource(t, "node \"srv\" {\n  role = \"server\"\n  "+tt.user+"\n}\n", nil)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			got := r.Nodes[0].User
			if got == nil {
				t.Fatal("node has no user")
			}
			if fmt.Sprintf("%#v", *got) != fmt.Sprintf("%#v", tt.want) || got.PasswordHash.Reveal() != tt.want.PasswordHash.Reveal() {
				t.Errorf("user = %+v; want %+v", *got, tt.want)
			}
			if got.CanLogIn() != tt.logsIn {
				t.Errorf("CanLogIn() = %v; want %v", got.CanLogIn(), tt.logsIn)
			}
			warned := false
			for _, d := range diags {
				warned = warned || d.Summary == "Nobody can log in"
			}
			if warned == tt.logsIn {
				t.Errorf("Nobody-can-log-in warning given: %v; want %v", warned, !tt.logsIn)
			}
		})
	}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// TestClusterCIDRCapacity: k3s gives each node a /24, servers included, so
// a /16 holds 256 nodes, not one more.
func TestClusterCIDRCapacity(t *testing.T) {
	for _, tt := range []struct {
		agents int
		fits   bool
	}{{agents: 255, fits: true}, {agents: 256, fits: false}} {
		src := fmt.Sprintf("cluster {\n  agent_join_batch = 1000\n}\nnode \"a\" {\n  role = \"agent\"\n  count = %d\n}\n%s", tt.agents, server)
		_, diags := loadSource(t, src, nil)
		tooSmall := false
		for _, d := range diags {
			if d.Summary == "Cluster network too small" {
				tooSmall = true
				if !strings.Contains(d.Detail, "has 256 of them") {
					t.Errorf("detail %q does not say a /16 has 256", d.Detail)
				}
			}
		}
		if tooSmall == tt.fits {
			t.Errorf("%d agents and a server on a /16: too small = %v; want %v", tt.agents, tooSmall, !tt.fits)
		}
	}
}

// TestSSHPublicKeys: ssh_public_keys() is the first of ~/.ssh's
// id_ed25519.pub, id_ecdsa.pub and id_rsa.pub; with none, or no home
// directory at all (CI), the recipe still loads, with an empty list and a
// warning that says how to make a key.
func TestSSHPublicKeys(t *testing.T) {
	const ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn4lC6ZnWsLqtCQ8ki7SIqNvLZPc0xk1pB9uJZbAFkf ed@home"
	const ec = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg= ec@home"
	for _, tc := range []struct {
		name  string
		files map[string]string // under ~/.ssh; nil: no home directory
		want  []string
		warn  string
	}{
		{"ed25519 first", map[string]string{"id_ed25519.pub": ed + "\n", "id_ecdsa.pub": ec}, []string{ed}, ""},
		{"ecdsa when no ed25519", map[string]string{"id_ecdsa.pub": ec, "id_ed25519": "a private key is not read"}, []string{ec}, ""},
		{"no key", map[string]string{}, nil, "ssh_public_keys() finds none here (no ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub), so make one with ssh-keygen -t ed25519"},
		{"no home directory", nil, nil, "make one with ssh-keygen -t ed25519"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			t.Setenv("HOME", home)
			if tc.files == nil {
				os.Unsetenv("HOME")
			}
			for name, content := range tc.files {
				os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
				if err := os.WriteFile(filepath.Join(home, ".ssh", name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r, diags := loadSource(t, "defaults {\n  user {\n    ssh_authorized_keys = ssh_public_keys()\n  }\n}\nnode \"srv\" {\n  role = \"server\"\n}\n", nil)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			if got := r.Nodes[0].User.SSHAuthorizedKeys; !slices.Equal(got, tc.want) {
				t.Errorf("keys = %q; want %q", got, tc.want)
			}
			var warning string
			for _, d := range diags {
				if d.Summary == "Nobody can log in" {
					warning = d.Detail
				}
			}
			if (tc.warn == "") != (warning == "") || !strings.Contains(warning, tc.warn) {
				t.Errorf("warning %q; want one with %q", warning, tc.warn)
			}
		})
	}
}

// TestPlanWiFiColumn: plan's table names each node's Wi-Fi network and
// country, never its key.
func TestPlanWiFiColumn(t *testing.T) {
	r, diags := loadSource(t, "node \"srv\" {\n  role = \"server\"\n  ip = \"192.168.1.10/24\"\n  wifi {\n    ssid = \"lab net\"\n    psk = \"correct-horse-battery\"\n    country = \"DE\"\n  }\n}\nnode \"wired\" {\n  role = \"agent\"\n}\n", nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	var b strings.Builder
	if err := NewPlan(r).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "WIFI") || !strings.Contains(out, `"lab net" (DE)`) || strings.Contains(out, "correct-horse") {
		t.Errorf("plan:\n%s", out)
	}
}
