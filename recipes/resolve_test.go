package recipes

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
)

func TestDefaultsMerge(t *testing.T) {
	src := `
defaults {
  ssh      = true
  timezone = "UTC"
  labels   = { zone = "a" }
  apt {
    packages      = ["vim"]
    modules_extra = true
  }
  user {
    name                = "ops"
    ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn4lC6ZnWsLqtCQ8ki7SIqNvLZPc0xk1pB9uJZbAFkf a@b"]
  }
}
node "s" {
  role     = "server"
  ip       = "192.168.1.10/24"
  timezone = "Europe/Berlin"
  labels   = { zone = "b", disk = "ssd" }
  apt {
    packages = ["htop"]
  }
}
node "a" {
  role  = "agent"
  count = 2
  ssh   = false
  user {
    name = "pi"
  }
}
`
	r, diags := loadSource(t, src, nil)
	if diags.HasErrors() {
		t.Fatalf("Load: %v", diags)
	}
	s, a1 := r.Nodes[0], r.Nodes[1]
	checks := []struct {
		what string
		got  any
		want any
	}{
		{what: "server keeps default ssh", got: s.SSH, want: true},
		{what: "server overrides timezone", got: s.Timezone, want: "Europe/Berlin"},
		{what: "server replaces labels as a whole", got: fmt.Sprint(s.Labels), want: "map[disk:ssd zone:b]"},
		{what: "server apt.packages overrides", got: s.Apt.Packages, want: []string{"htop"}},
		{what: "server apt.modules_extra from defaults", got: s.Apt.ModulesExtra, want: true},
		{what: "agent overrides ssh", got: a1.SSH, want: false},
		{what: "agent keeps default timezone", got: a1.Timezone, want: "UTC"},
		{what: "agent user.name overrides", got: a1.User.Name, want: "pi"},
		{what: "agent keeps default user keys", got: len(a1.User.SSHAuthorizedKeys), want: 1},
		{what: "server keeps default user name", got: s.User.Name, want: "ops"},
		{what: "agent hostnames", got: r.Nodes[1].Hostname + "," + r.Nodes[2].Hostname, want: "a-1,a-2"},
		{what: "agent join", got: a1.JoinURL, want: "https://192.168.1.10:6443"},
		{what: "single server has no cluster-init", got: s.ClusterInit, want: false},
		{what: "default cluster name is the file stem", got: r.Cluster.Name, want: "recipe"},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s: got %v; want %v", c.what, c.got, c.want)
		}
	}
}

func TestJoinBatches(t *testing.T) {
	src := "cluster {\n  agent_join_batch = 2\n}\n" + server + "node \"a\" {\n  role = \"agent\"\n  count = 5\n}\n"
	r, diags := loadSource(t, src, nil)
	if diags.HasErrors() {
		t.Fatalf("Load: %v", diags)
	}
	var batches []int
	for _, n := range r.Nodes[1:] {
		batches = append(batches, n.JoinBatch)
	}
	if want := []int{0, 0, 1, 1, 2}; !slices.Equal(batches, want) {
		t.Errorf("join batches = %v; want %v", batches, want)
	}
}

func TestDirectoryRecipe(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"cluster.hcl": "cluster {\n  token = file(\"token.txt\")\n}\n",
		"nodes.hcl":   server + "node \"a\" {\n  role = \"agent\"\n}\n",
		"token.txt":   "file-token-0123456789abcdef\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, diags := Load(hclparse.NewParser(), dir)
	if diags.HasErrors() {
		t.Fatalf("Load(dir): %v", diags)
	}
	if len(r.Files) != 2 || len(r.Nodes) != 2 {
		t.Errorf("Load(dir) read %v with %d nodes; want 2 files, 2 nodes", r.Files, len(r.Nodes))
	}
	if got := r.Cluster.Token.Reveal(); got != "file-token-0123456789abcdef" {
		t.Errorf("token from file() = %q; want it without the newline", got)
	}
	if r.Cluster.Name != filepath.Base(dir) {
		t.Errorf("cluster name = %q; want the directory name %q", r.Cluster.Name, filepath.Base(dir))
	}

	// A block given twice across files is reported where the second is.
	if err := os.WriteFile(filepath.Join(dir, "z.hcl"), []byte("cluster {\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, diags = Load(hclparse.NewParser(), dir)
	if !diags.HasErrors() || !strings.HasSuffix(diags[0].Subject.Filename, "z.hcl") {
		t.Errorf("Load(dir with two cluster blocks) = %v; want an error in z.hcl", diags)
	}
}

func TestLoadMissing(t *testing.T) {
	_, diags := Load(hclparse.NewParser(), filepath.Join(t.TempDir(), "nope.hcl"))
	if !diags.HasErrors() || !strings.Contains(diags[0].Detail, "nope.hcl") {
		t.Errorf("Load(missing) = %v; want an error naming the file", diags)
	}
	_, diags = Load(hclparse.NewParser(), t.TempDir())
	if !diags.HasErrors() || !strings.Contains(diags[0].Detail, "no *.hcl files") {
		t.Errorf("Load(empty dir) = %v; want an error saying it has no recipe files", diags)
	}
}

func FuzzLoad(f *testing.F) {
	for _, path := range []string{"examples/lab.hcl", "examples/ha.hcl", "examples/fleet.hcl"} {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("node \"a\" {\n  role = \"server\"\n  count = 3\n}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		r, diags := load(hclparse.NewParser(), "fuzz.hcl", t.TempDir(), []source{{name: "fuzz.hcl", src: src}})
		if (r == nil) != diags.HasErrors() {
			t.Fatalf("load returned recipe %v with diagnostics %v", r != nil, diags)
		}
	})
}

// TestReportURLs: a node reports to its own report block's URL, else its
// defaults', else the cluster's; plan says where they go.
func TestReportURLs(t *testing.T) {
	r, diags := loadSource(t, `
cluster {
  report {
    url = "http://192.168.1.5:8470"
  }
}
node "srv" {
  role = "server"
  ip   = "192.168.1.10/24"
}
node "edge" {
  role  = "agent"
  count = 2
  report {
    url = "https://watch.example.net/pibake"
  }
}
`, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	got := map[string]string{}
	for _, n := range r.Nodes {
		got[n.Hostname] = n.ReportURL
	}
	want := map[string]string{"srv": "http://192.168.1.5:8470", "edge-1": "https://watch.example.net/pibake", "edge-2": "https://watch.example.net/pibake"}
	if !maps.Equal(got, want) {
		t.Errorf("report URLs = %v; want %v", got, want)
	}
	var b strings.Builder
	if err := NewPlan(r).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if line := "reports:  http://192.168.1.5:8470 (1 node), https://watch.example.net/pibake (2 nodes); pibake watch receives them"; !strings.Contains(b.String(), line) {
		t.Errorf("plan does not say %q:\n%s", line, b.String())
	}
}
