package builder

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/builder/identity"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/testimage"
	"github.com/pibake/pibake/recipes"
)

const (
	haToken      = "ha-server-token-0123456789abcdef0123"
	haAgentToken = "ha-agent-token-fedcba9876543210fedc"
)

// haRecipe loads recipes/examples/ha.hcl with the CA on, its tokens from
// the environment as the example says.
func haRecipe(t *testing.T) *recipes.Recipe {
	t.Helper()
	t.Setenv("K3S_TOKEN", haToken)
	t.Setenv("K3S_AGENT_TOKEN", haAgentToken)
	r, diags := recipes.Load(hclparse.NewParser(), "../recipes/examples/ha.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	r.Cluster.CA = recipes.CAGenerate
	return r
}

// bootFiles extracts an image's boot partition with mtools.
func bootFiles(t *testing.T, img string) map[string][]byte {
	t.Helper()
	mcopy := testimage.Tool(t, "mcopy")
	dir := t.TempDir()
	off := testimage.Bookworm().BootStart * 512
	if out, err := exec.Command(mcopy, "-s", "-n", "-i", img+"@@"+strconv.FormatInt(off, 10), "::/", dir).CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v\n%s", err, out)
	}
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatalf("read what mcopy copied out of %s: %v", img, err)
	}
	return files
}

// TestBuildHAWithGeneratedCA is issue 15's "done when": ha.hcl with the CA
// on gives a kubeconfig kubectl accepts, CA-pinned tokens on every joiner,
// the CA only on the founding server, and a rebuild that changes no byte.
func TestBuildHAWithGeneratedCA(t *testing.T) {
	openssl := testimage.Tool(t, "openssl")
	kubectl := testimage.Tool(t, "kubectl")
	s := buildtest.NewSmallReleaseServer(t)
	r := haRecipe(t)
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	opt.Image, opt.Jobs = s.URL+"/latest", 4
	results, err := Build(context.Background(), r, opt)
	if err != nil {
		t.Fatal(err)
	}
	caDir := filepath.Join(opt.OutDir, filepath.FromSlash(outdir.CADir))
	ca, err := identity.Load(caDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hash := ca.Hash()

	// The kubeconfig: 0600, accepted by kubectl, its client certificate
	// verified by openssl against the kept root.
	kc := filepath.Join(opt.OutDir, "ha.kubeconfig")
	if fi, err := os.Stat(kc); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ha.kubeconfig: %v (mode %v)", err, fi.Mode())
	}
	env := append(os.Environ(), "HOME="+t.TempDir(), "KUBECONFIG=")
	view := exec.Command(kubectl, "--kubeconfig", kc, "config", "view", "--raw", "-o", "jsonpath={.clusters[0].cluster.server} {.users[0].user.client-certificate-data}")
	view.Env = env
	out, err := view.Output()
	server, certData, _ := strings.Cut(string(out), " ")
	if err != nil || server != "https://10.0.10.11:6443" {
		t.Fatalf("kubectl config view: %v: server %q", err, server)
	}
	cert, err := base64.StdEncoding.DecodeString(certData)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(t.TempDir(), "admin.crt")
	os.WriteFile(certFile, cert, 0o600)
	chain := filepath.Join(t.TempDir(), "chain.crt")
	os.WriteFile(chain, ca.File("client-ca.crt"), 0o600)
	if out, err := exec.Command(openssl, "verify", "-purpose", "sslclient", "-CAfile", filepath.Join(caDir, "root-ca.crt"), "-untrusted", chain, certFile).CombinedOutput(); err != nil {
		t.Errorf("openssl verify of the kubeconfig's client certificate: %v\n%s", err, out)
	}

	// Every node: the founding server carries the CA and the plain token;
	// every joiner pins the CA, agents with the agent token only.
	pinned := regexp.MustCompile(`token: "K10([0-9a-f]{64})::(server|node):([^"]+)"`)
	for _, res := range results {
		files := bootFiles(t, res.File)
		cfg := string(files["pibake/k3s-config.yaml"])
		var summary firstboot.Summary
		json.Unmarshal(files["pibake/node.json"], &summary)
		if summary.CAHash != hash {
			t.Errorf("%s: node.json ca_hash %q, want %q", res.Hostname, summary.CAHash, hash)
		}
		if pw := string(files["pibake/node-password"]); !regexp.MustCompile(`^[0-9a-f]{32}\n$`).MatchString(pw) {
			t.Errorf("%s: node-password %q", res.Hostname, pw)
		}
		if res.Hostname == "ha-server-1" {
			if summary.CA != firstboot.CACarries || !strings.Contains(cfg, `token: "`+haToken+`"`) {
				t.Errorf("founding server: ca %q, config:\n%s", summary.CA, cfg)
			}
			for _, name := range identity.K3sFiles() {
				if got := files["pibake/tls/"+name]; !bytes.Equal(got, ca.File(name)) {
					t.Errorf("founding server: pibake/tls/%s differs from the kept CA", name)
				}
			}
			// What the joiners pin is what k3s computes from the bundle
			// this server will serve at /cacerts.
			if h, err := identity.BundleHash(files["pibake/tls/server-ca.crt"], time.Now()); err != nil || h != hash {
				t.Errorf("the founding server's server-ca.crt hashes to %s (%v); joiners pin %s", h, err, hash)
			}
			continue
		}
		m := pinned.FindStringSubmatch(cfg)
		if m == nil || m[1] != hash {
			t.Errorf("%s: no token pinning %s:\n%s", res.Hostname, hash, cfg)
			continue
		}
		wantUser, wantSecret := "server", haToken
		if res.Role == "agent" {
			wantUser, wantSecret = "node", haAgentToken
		}
		if m[2] != wantUser || m[3] != wantSecret || summary.CA != firstboot.CAPins {
			t.Errorf("%s: token user %q, ca %q; want %q, pins", res.Hostname, m[2], summary.CA, wantUser)
		}
		for name, data := range files {
			if strings.HasPrefix(name, "pibake/tls/") || bytes.Contains(data, []byte("PRIVATE KEY")) {
				t.Errorf("%s: joiner carries %s", res.Hostname, name)
			}
			if res.Role == "agent" && bytes.Contains(data, []byte(haToken)) {
				t.Errorf("%s: agent's %s holds the server token", res.Hostname, name)
			}
		}
	}
	var mf outdir.Manifest
	b, _ := os.ReadFile(filepath.Join(opt.OutDir, "manifest.json"))
	json.Unmarshal(b, &mf)
	if mf.CAHash != hash || len(mf.Nodes) != 7 {
		t.Errorf("manifest ca_hash %q, %d nodes", mf.CAHash, len(mf.Nodes))
	}
	for _, e := range mf.Nodes {
		if want := map[bool]string{true: firstboot.CACarries, false: firstboot.CAPins}[e.Hostname == "ha-server-1"]; e.CA != want {
			t.Errorf("manifest: %s ca %q, want %q", e.Hostname, e.CA, want)
		}
	}

	// A rebuild, and a forced one, change no byte anywhere.
	before := snapshot(t, opt.OutDir)
	for _, force := range []bool{false, true} {
		opt.Force = force
		if _, err := Build(context.Background(), haRecipe(t), opt); err != nil {
			t.Fatal(err)
		}
		if after := snapshot(t, opt.OutDir); !maps.Equal(before, after) {
			t.Errorf("rebuild (force %v) changed: %v", force, changed(before, after))
		}
	}
}

// TestServingSANsCoverEveryAddress: every address a client of the ha
// cluster is given (the kubeconfig's server, every join URL, tls_san) is
// in the serving certificate of each server it may reach, as k3s makes
// its SAN list.
func TestServingSANsCoverEveryAddress(t *testing.T) {
	r := haRecipe(t)
	hostOf := func(u string) string {
		h := strings.TrimPrefix(u, "https://")
		return h[:strings.LastIndex(h, ":")]
	}
	want := append([]string{hostOf(r.Cluster.APIServer)}, r.Cluster.TLSSAN...)
	for _, n := range r.Nodes {
		if n.JoinURL != "" {
			want = append(want, hostOf(n.JoinURL))
		}
	}
	for _, n := range r.Nodes {
		if n.Role != recipes.RoleServer {
			continue
		}
		sans := firstboot.ServingSANs(&r.Cluster, &n)
		for _, h := range append(want, n.Address.Addr().String(), "kubernetes.default.svc", "10.43.0.1") {
			if !slices.Contains(sans, h) {
				t.Errorf("%s: serving SANs %v lack %s", n.Hostname, sans, h)
			}
		}
	}
	// With no address at all, the kubeconfig names the founding server's
	// mDNS name, which the servers then carry.
	path := filepath.Join(t.TempDir(), "dhcp.hcl")
	os.WriteFile(path, []byte("cluster {\n  ca = \"generate\"\n}\nnode \"pi-server\" {\n  role = \"server\"\n}\n"), 0o600)
	d, diags := recipes.Load(hclparse.NewParser(), path)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if d.Cluster.APIServer != "https://pi-server.local:6443" || !slices.Contains(firstboot.ServingSANs(&d.Cluster, &d.Nodes[0]), "pi-server.local") {
		t.Errorf("DHCP-only cluster: API server %q, SANs %v", d.Cluster.APIServer, firstboot.ServingSANs(&d.Cluster, &d.Nodes[0]))
	}
}

// TestNodePasswords: stable across rebuilds and across a lost output
// directory (the recipe's token derives them), changed for one node by
// --rotate-node-password, which rebuilds only that node.
func TestNodePasswords(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	cache := filepath.Join(t.TempDir(), "cache")
	opt := buildOptions(t, s, cache)
	r := recipeFor(t, s, "")
	res1, err := Build(context.Background(), r, opt)
	if err != nil {
		t.Fatal(err)
	}
	pw := func(res []NodeResult, host string) string {
		for _, x := range res {
			if x.Hostname == host {
				return buildtest.ReadBootFile(t, x.File, "pibake/node-password")
			}
		}
		t.Fatalf("no %s", host)
		return ""
	}
	srv, agent := pw(res1, "srv"), pw(res1, "agent")
	if srv == agent {
		t.Error("two nodes have the same password")
	}
	other := opt
	other.OutDir = filepath.Join(t.TempDir(), "elsewhere")
	res2, err := Build(context.Background(), recipeFor(t, s, ""), other)
	if err != nil {
		t.Fatal(err)
	}
	if pw(res2, "srv") != srv || pw(res2, "agent") != agent {
		t.Error("the same recipe in a new output directory gives other node passwords: a re-flashed node would be refused")
	}

	opt.RotateNodePassword = []string{"agent"}
	res3, err := Build(context.Background(), recipeFor(t, s, ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range res3 {
		if want := map[bool]string{true: StatusBuilt, false: StatusUnchanged}[x.Hostname == "agent"]; x.Status != want {
			t.Errorf("%s: %s after rotating agent's password; want %s", x.Hostname, x.Status, want)
		}
	}
	if pw(res3, "agent") == agent || pw(res3, "srv") != srv {
		t.Error("rotation did not change exactly the agent's password")
	}
	if fi, err := os.Stat(filepath.Join(opt.OutDir, ".pibake", "node-passwords.json")); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("node-passwords.json has mode %v; want 0600", fi.Mode().Perm())
	}
	opt.RotateNodePassword = nil
	res4, err := Build(context.Background(), recipeFor(t, s, ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	if pw(res4, "agent") != pw(res3, "agent") {
		t.Error("the rotated password did not stay")
	}

	for _, tc := range []struct {
		rotate, nodes []string
		want          error
	}{
		{rotate: []string{"nope"}, want: fleet.ErrUnknownNode},
		{rotate: []string{"agent"}, nodes: []string{"srv"}, want: fleet.ErrNotSelected},
	} {
		o := opt
		o.RotateNodePassword, o.Nodes = tc.rotate, tc.nodes
		if _, err := Build(context.Background(), recipeFor(t, s, ""), o); !errors.Is(err, tc.want) {
			t.Errorf("rotate %v nodes %v: %v; want %v", tc.rotate, tc.nodes, err, tc.want)
		}
	}
}

// snapshot hashes every file under dir, by relative path.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "lock" {
			return err
		}
		sum, _, err := files.SHA256(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		m[rel] = sum
		return nil
	})
	return m
}

// changed lists the files that differ between a and b; "(new)" marks
// those only b holds.
func changed(a, b map[string]string) []string {
	var out []string
	for k := range a {
		if a[k] != b[k] {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k+" (new)")
		}
	}
	slices.Sort(out)
	return out
}
