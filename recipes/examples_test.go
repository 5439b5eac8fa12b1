package recipes

import (
	"bytes"
	"encoding/json"
	"github.com/pibake/pibake/internal/golden"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
)

// Secrets the examples are loaded with; no output may contain them.
const (
	exampleToken      = "example-token-0123456789abcdef"
	exampleAgentToken = "example-agent-token-fedcba9876543210"
)

// TestExamples loads every example recipe and compares its plan, as text
// and as JSON, with the golden files in testdata/plan.
func TestExamples(t *testing.T) {
	t.Setenv("K3S_TOKEN", exampleToken)
	t.Setenv("K3S_AGENT_TOKEN", exampleAgentToken)
	home, _ := filepath.Abs("testdata/home") // ssh_public_keys() reads its .ssh
	t.Setenv("HOME", home)
	paths, err := filepath.Glob("examples/*.hcl")
	if err != nil || len(paths) < 3 {
		t.Fatalf("want at least 3 examples, found %v (%v)", paths, err)
	}
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".hcl")
		t.Run(name, func(t *testing.T) {
			r, diags := Load(hclparse.NewParser(), path)
			if diags.HasErrors() {
				t.Fatalf("Load(%s): %v", path, diags)
			}
			plan := NewPlan(r)
			// The output directory is absolute and differs per checkout.
			if plan.Output.Dir != "" {
				plan.Output.Dir = filepath.Base(plan.Output.Dir)
			}
			var text, js bytes.Buffer
			if err := plan.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if err := plan.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			for _, out := range []struct {
				file string
				got  []byte
			}{{file: name + ".txt", got: text.Bytes()}, {file: name + ".json", got: js.Bytes()}} {
				if bytes.Contains(out.got, []byte(exampleToken)) || bytes.Contains(out.got, []byte(exampleAgentToken)) {
					t.Errorf("plan %s contains a token", out.file)
				}
				golden.Compare(t, filepath.Join("testdata", "plan", out.file), out.got)
			}
		})
	}
}

// TestLargeHAPlan is the acceptance case: a 63-node HA recipe
// plans 63 nodes in JSON without any secret in it.
func TestLargeHAPlan(t *testing.T) {
	src := `
cluster {
  token       = "ha-cluster-secret-0123456789"
  agent_token = "ha-agent-secret-9876543210"
  server_ip   = "10.1.0.11"
  ca          = "generate"
}
defaults {
  user {
    password_hash = "$6$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ./0123456789abcdefghijk"
  }
  wifi {
    ssid    = "edge"
    psk     = "wifi-secret-passphrase"
    country = "de"
  }
}
node "cp" {
  role  = "server"
  count = 3
  ip    = "${cidrhost("10.1.0.0/24", 11 + count.index)}/24"
}
node "worker" {
  role  = "agent"
  count = 60
  ip    = "${cidrhost("10.1.0.0/24", 100 + count.index)}/24"
}
`
	r, diags := loadSource(t, src, nil)
	if diags.HasErrors() {
		t.Fatalf("Load: %v", diags)
	}
	var js bytes.Buffer
	if err := NewPlan(r).WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"ha-cluster-secret", "ha-agent-secret", "wifi-secret", "$6$saltsalt"} {
		if bytes.Contains(js.Bytes(), []byte(secret)) {
			t.Errorf("plan JSON contains the secret %q", secret)
		}
	}
	var got struct {
		Cluster struct {
			CA string `json:"ca"`
		} `json:"cluster"`
		Nodes []struct {
			CA          string `json:"ca"`
			Hostname    string `json:"hostname"`
			ClusterInit bool   `json:"cluster_init"`
			Join        string `json:"join"`
			WiFi        struct {
				PSK     string `json:"psk"`
				Country string `json:"country"`
			} `json:"wifi"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Nodes) != 63 {
		t.Fatalf("plan lists %d nodes; want 63", len(got.Nodes))
	}
	first, last := got.Nodes[0], got.Nodes[62]
	if first.Hostname != "cp-1" || !first.ClusterInit || first.Join != "" {
		t.Errorf("first node = %+v; want cp-1 founding the cluster", first)
	}
	if got.Cluster.CA != "generate" {
		t.Errorf("plan cluster ca = %q; want generate", got.Cluster.CA)
	}
	for i, n := range got.Nodes {
		if want := map[bool]string{true: "carries", false: "pins"}[i == 0]; n.CA != want {
			t.Errorf("%s: ca = %q; want %q", n.Hostname, n.CA, want)
		}
	}
	if last.Hostname != "worker-60" || last.Join != "https://10.1.0.11:6443" || last.WiFi.PSK != "<redacted>" || last.WiFi.Country != "DE" {
		t.Errorf("last node = %+v; want worker-60 joining https://10.1.0.11:6443 with a redacted psk", last)
	}
}
