package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/dpkg"
	"github.com/pibake/pibake/builder/sbom"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/supplytest"
	"github.com/pibake/pibake/internal/testimage"
)

// haHosts are the nodes of recipes/examples/ha.hcl.
var haHosts = []string{"ha-agent-1", "ha-agent-2", "ha-agent-3", "ha-agent-4", "ha-server-1", "ha-server-2", "ha-server-3"}

// supplyRun runs pibake with the test's cache, quietly, and fails the
// test if it printed a token.
type supplyRun struct {
	t     *testing.T
	cache string
}

func (p supplyRun) run(args ...string) (string, int) {
	p.t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	out := stdout.String() + stderr.String()
	for _, tok := range []string{"K3S_TOKEN", "K3S_AGENT_TOKEN"} {
		if v := os.Getenv(tok); strings.Contains(out, v) {
			p.t.Errorf("pibake %s printed $%s", strings.Join(args, " "), tok)
		}
	}
	return out, code
}

func (p supplyRun) build(args ...string) (string, int) {
	return p.run(append([]string{"build", "../../recipes/examples/ha.hcl", "--cache", p.cache, "-q"}, args...)...)
}

// TestSupplyChainEndToEnd is issue 26's "done when": a build of
// recipes/examples/ha.hcl with --sign-key writes SBOMs that CycloneDX's
// schema (python3-jsonschema) accepts and whose packages are dpkg-query's
// of the image's own database (read out with debugfs), signatures that
// ssh-keygen -Y verify accepts, sums sha256sum -c accepts; pibake verify
// passes on it and names every tampering (a byte of the root partition,
// of a base boot file, of pibake's boot files, of SHA256SUMS, of a
// signature); a shard refuses --sign-key, and shards merged with
// merge --sign-key give the unsharded build's bytes.
func TestSupplyChainEndToEnd(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	t.Setenv("K3S_TOKEN", "ha-server-token-0123456789abcdef0123")
	t.Setenv("K3S_AGENT_TOKEN", "ha-agent-token-fedcba9876543210fedc")
	// The Bookworm shape (2 KiB clusters, 4 MiB alignment, init=…) with
	// a 132 MiB boot partition and a 16 MiB root: the subject is what the
	// build writes beside the images and how verify and merge read it,
	// not the release-size layout (builder's tests keep that), and seven
	// nodes built three times are 21 images to write and hash.
	spec := buildtest.SmallBookworm()
	base := testimage.For(t, spec)
	root := t.TempDir()
	dir := func(name string) string { return filepath.Join(root, name) }
	key, allowed := buildtest.SigningKey(t, t.TempDir())
	p := supplyRun{t: t, cache: dir("cache")}

	if out, code := p.run("init", "../../recipes/examples/ha.hcl", "--out", dir("init")); code != exitOK {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	for _, d := range []string{"whole", "s1", "s2"} {
		buildtest.Copy(t, dir("init"), dir(d))
	}
	if out, code := p.build("--image", base, "--out", dir("whole"), "--sign-key", key); code != exitOK {
		t.Fatalf("build --sign-key: exit %d\n%s", code, out)
	}
	checkIndependently(t, dir("whole"), allowed, spec)
	if out, code := p.run("verify", dir("whole"), "--allowed-signers", allowed); code != exitOK {
		t.Fatalf("pibake verify of the build: exit %d\n%s", code, out)
	}
	checkTamperingNamed(t, p, dir("whole"), allowed, spec)

	if out, code := p.build("--image", base, "--out", dir("s1"), "--shard", "1/2", "--sign-key", key); code != exitUsage || !strings.Contains(out, "a shard does not sign") {
		t.Errorf("build --shard --sign-key: exit %d\n%s", code, out)
	}
	for i, s := range []string{"s1", "s2"} {
		if out, code := p.build("--image", base, "--out", dir(s), "--shard", fmt.Sprintf("%d/2", i+1)); code != exitOK {
			t.Fatalf("build --shard %d/2: exit %d\n%s", i+1, code, out)
		}
	}
	if out, code := p.run("merge", "--out", dir("merged"), "--sign-key", key, dir("s1"), dir("s2")); code != exitOK {
		t.Fatalf("merge --sign-key: exit %d\n%s", code, out)
	}
	compareOutputs(t, dir("whole"), dir("merged"))
	if out, code := p.run("verify", dir("merged"), "--allowed-signers", allowed); code != exitOK {
		t.Errorf("pibake verify of the merge: exit %d\n%s", code, out)
	}
}

// checkIndependently checks a signed build directory with tools that are
// not pibake's.
func checkIndependently(t *testing.T, out, allowed string, spec testimage.Spec) {
	t.Helper()
	cmd := exec.Command("sha256sum", "--strict", "-c", "SHA256SUMS")
	cmd.Dir = out
	if b, err := cmd.CombinedOutput(); err != nil || strings.Count(string(b), ": OK") != 3*len(haHosts)+2 { // images, block maps, SBOMs; delta.json, provenance.json
		t.Errorf("sha256sum -c: %v\n%s", err, b)
	}
	for _, name := range []string{"SHA256SUMS", "provenance.json"} {
		keygenVerify(t, allowed, filepath.Join(out, name))
	}
	records, _ := filepath.Glob(filepath.Join(out, "*.json"))
	for _, p := range records {
		b, _ := os.ReadFile(p)
		for _, tok := range []string{"K3S_TOKEN", "K3S_AGENT_TOKEN"} {
			if bytes.Contains(b, []byte(os.Getenv(tok))) {
				t.Errorf("%s holds $%s", filepath.Base(p), tok)
			}
		}
	}
	for _, h := range haHosts {
		doc, err := os.ReadFile(filepath.Join(out, sbom.FileName(h)))
		if err != nil {
			t.Fatal(err)
		}
		schemaValidate(t, h, doc)
		s, err := sbom.Parse(doc)
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(s.Payload, func(f sbom.File) bool { return f.Path == "pibake/k3s-config.yaml" }); i < 0 || !s.Payload[i].Secret || s.Payload[i].SHA256 != "" {
			t.Errorf("%s's SBOM does not list the k3s config (which holds the token) as a secret without a sum: %+v", h, s.Payload)
		}
		got, want := s.Packages, dpkgQueryOfImage(t, filepath.Join(out, h+".img"), spec)
		byName := func(a, b dpkg.Package) int {
			return strings.Compare(a.Name+":"+a.Architecture, b.Name+":"+b.Architecture)
		}
		slices.SortFunc(got, byName)
		slices.SortFunc(want, byName)
		if !slices.Equal(got, want) {
			t.Errorf("%s's SBOM lists packages %+v; dpkg-query on its image says %+v", h, s.Packages, want)
		}
	}
}

// keygenVerify checks file's signature with ssh-keygen -Y verify.
func keygenVerify(t *testing.T, allowed, file string) {
	t.Helper()
	in, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd := exec.Command(testimage.Tool(t, "ssh-keygen"), "-Y", "verify", "-f", allowed, "-I", buildtest.Principal, "-n", "pibake", "-s", file+".sig")
	cmd.Stdin = in
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Good \"pibake\" signature for "+buildtest.Principal) {
		t.Errorf("ssh-keygen -Y verify %s: %v\n%s", filepath.Base(file), err, out)
	}
}

// schemaValidate checks an SBOM against CycloneDX 1.6's official schema
// with python3-jsonschema (builder/sbom/testdata/validate.py).
func schemaValidate(t *testing.T, host string, doc []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), host+".cdx.json")
	if err := os.WriteFile(p, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/bin/python3", "../../builder/sbom/testdata/validate.py", "../../builder/sbom/testdata/schema", p).CombinedOutput()
	if err != nil && strings.Contains(string(out), "No module named 'jsonschema'") {
		testimage.Missing(t, "python3-jsonschema (apt-get install python3-jsonschema, or make deps)")
	}
	if err != nil {
		t.Errorf("%s: the official CycloneDX 1.6 schema rejects the SBOM: %v\n%s", host, err, out)
	}
}

// dpkgQueryOfImage reads the dpkg database out of the image's root with
// debugfs and lists what dpkg-query says is installed, in its order.
func dpkgQueryOfImage(t *testing.T, img string, spec testimage.Spec) []dpkg.Package {
	t.Helper()
	admin := t.TempDir()
	debugfs := testimage.Tool(t, "debugfs")
	fs := fmt.Sprintf("%s?offset=%d", img, spec.RootStart()*testimage.SectorSize)
	if out, err := exec.Command(debugfs, "-R", "dump /"+dpkg.StatusPath+" "+filepath.Join(admin, "status"), fs).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	out, err := exec.Command(testimage.Tool(t, "dpkg-query"), "--admindir", admin, "-W", "-f",
		`${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n`).Output()
	if err != nil {
		t.Fatalf("dpkg-query: %v", err)
	}
	var pkgs []dpkg.Package
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if f := strings.Split(line, "\t"); len(f) == 6 && f[0] == "installed" {
			pkgs = append(pkgs, dpkg.Package{Name: f[1], Version: f[2], Architecture: f[3], Source: f[4], SourceVersion: f[5]})
		}
	}
	if len(pkgs) == 0 {
		t.Fatalf("dpkg-query lists no installed package in %s", img)
	}
	return pkgs
}

// checkTamperingNamed changes one byte in each place issue 26 names,
// runs pibake verify, and changes it back: verify must fail and name the
// check and what differs.
func checkTamperingNamed(t *testing.T, p supplyRun, out, allowed string, spec testimage.Spec) {
	t.Helper()
	img := filepath.Join(out, "ha-agent-1.img")
	bootFrom, rootFrom := spec.BootStart*testimage.SectorSize, spec.RootStart()*testimage.SectorSize
	sums := filepath.Join(out, "SHA256SUMS")
	tests := []struct {
		name string
		file string
		at   int64
		want []string
	}{
		{"root partition", img, rootFrom + 5<<20 + 321, []string{"FAILED  image ha-agent-1.img", "partition 2 (ext4 rootfs), bytes"}},
		{"base boot file", img, supplytest.Offset(t, img, []byte("kernel image stand-in"), bootFrom, rootFrom) + 3, []string{"FAILED  image ha-agent-1.img", "partition 1 (vfat bootfs), bytes"}},
		{"pibake boot file", img, supplytest.Offset(t, img, []byte(`"hostname": "ha-agent-1"`), bootFrom, rootFrom) + 14,
			[]string{"differs inside pibake's own changes", "FAILED  sbom ha-agent-1.cdx.json", "boot file pibake/node.json differs from the SBOM's"}},
		{"SHA256SUMS", sums, supplytest.Offset(t, sums, []byte("  ha-agent-1.img\n"), 0, 1<<20) - 1, []string{"FAILED  signature SHA256SUMS.sig", "FAILED  SHA256SUMS", "ha-agent-1.img: SHA-256 is"}},
		{"signature", filepath.Join(out, "provenance.json.sig"), fileSize(t, filepath.Join(out, "provenance.json.sig")) - 60, []string{"FAILED  signature provenance.json.sig"}},
	}
	for _, tt := range tests {
		// A hex digit of SHA256SUMS must stay a hex digit ('a' and 'f'
		// XOR 1 are not), or verify rightly reports a malformed line
		// instead of the wrong sum this row is about.
		mask := supplytest.HexSafeMask(t, tt.file, tt.at)
		supplytest.Flip(t, tt.file, tt.at, mask)
		report, code := p.run("verify", out, "--allowed-signers", allowed)
		supplytest.Flip(t, tt.file, tt.at, mask)
		if code != exitFailure {
			t.Errorf("%s changed: pibake verify exits %d; want %d\n%s", tt.name, code, exitFailure, report)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(report, w) {
				t.Errorf("%s changed: pibake verify does not say %q:\n%s", tt.name, w, report)
			}
		}
	}
	if report, code := p.run("verify", out, "--allowed-signers", allowed); code != exitOK {
		t.Fatalf("every byte changed back: pibake verify exits %d\n%s", code, report)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// compareOutputs requires every file a build writes to be byte for byte
// the same in two output directories.
func compareOutputs(t *testing.T, a, b string) {
	t.Helper()
	names := []string{"SHA256SUMS", "SHA256SUMS.sig", "delta.json", "provenance.json", "provenance.json.sig", "manifest.json"}
	for _, h := range haHosts {
		names = append(names, h+".img", h+".img.bmap", sbom.FileName(h))
	}
	for _, name := range names {
		x, errA := os.ReadFile(filepath.Join(a, name))
		y, errB := os.ReadFile(filepath.Join(b, name))
		if errA != nil || errB != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between the unsharded build and the merged shards (%v, %v)", name, errA, errB)
		}
	}
}
