package sbom

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/dpkg"
	"github.com/pibake/pibake/internal/golden"
	"github.com/pibake/pibake/internal/testimage"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimage.Cleanup()
	os.Exit(code)
}

func sum(c byte) string { return strings.Repeat(string(c), 64) }

// sample is a realistic node: a Bookworm base, a pinned k3s with an
// air-gap install, apt packages, payload files of which two hold secrets.
func sample(t testing.TB) Input {
	t.Helper()
	status, err := os.ReadFile("../dpkg/testdata/status")
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := dpkg.Parse(status)
	if err != nil {
		t.Fatal(err)
	}
	return Input{
		PibakeVersion: "v0.9.0",
		Cluster:       "lab",
		Node:          Node{Hostname: "pi-server", Role: "server", BuildID: "0123456789abcdef"},
		Image:         &File{Path: "pi-server.img", SHA256: sum('1'), Size: 2986344448},
		Base: Base{
			Source: "raspios_lite_arm64:latest", URL: "https://downloads.raspberrypi.com/raspios_lite_arm64/images/raspios_lite_arm64-2025-05-13/2025-05-13-raspios-bookworm-arm64-lite.img.xz",
			SHA256: sum('a'), ImageSHA256: sum('b'), Released: time.Date(2025, 5, 6, 15, 10, 2, 0, time.UTC),
			OSID: "debian", OSVersionID: "12", PrettyName: "Debian GNU/Linux 12 (bookworm)", Codename: "bookworm",
		},
		Packages: pkgs,
		K3s: K3s{Version: "v1.33.5+k3s1", Channel: "stable", InstallScriptURL: "https://get.k3s.io", InstallScriptSHA256: sum('c'),
			Airgap: []File{{Path: "pibake/airgap/k3s", SHA256: sum('d'), Size: 70000000}, {Path: "pibake/airgap/install.sh", SHA256: sum('c'), Size: 36000}}},
		Apt: Apt{Packages: []string{"vim", "curl"}, Upgrade: true, ModulesExtra: true},
		Payload: []File{
			{Path: "pibake/firstboot.sh", SHA256: sum('e'), Size: 9000},
			{Path: "pibake/k3s-config.yaml", Size: 400, Secret: true},
			{Path: "cmdline.txt", SHA256: sum('f'), Size: 160},
			{Path: "userconf.txt", Size: 110, Secret: true},
		},
	}
}

// TestForNodeGolden pins the document's exact bytes.
func TestForNodeGolden(t *testing.T) {
	b, err := ForNode(sample(t))
	if err != nil {
		t.Fatal(err)
	}
	golden.Compare(t, "testdata/pi-server.cdx.json.golden", b)
}

// TestForNodeDeterministic: the same inputs in another order give the
// same bytes; a changed input gives another serial number.
func TestForNodeDeterministic(t *testing.T) {
	in := sample(t)
	a, err := ForNode(in)
	if err != nil {
		t.Fatal(err)
	}
	shuffled := sample(t)
	for _, s := range [][]File{shuffled.Payload, shuffled.K3s.Airgap} {
		for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
			s[i], s[j] = s[j], s[i]
		}
	}
	p := shuffled.Packages
	for i, j := 0, len(p)-1; i < j; i, j = i+1, j-1 {
		p[i], p[j] = p[j], p[i]
	}
	shuffled.Apt.Packages = []string{"curl", "vim", "vim"}
	b, err := ForNode(shuffled)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("ForNode of the same inputs in another order differs")
	}
	in.Payload[0].SHA256 = sum('9')
	c, err := ForNode(in)
	if err != nil {
		t.Fatal(err)
	}
	if serial(t, a) == serial(t, c) {
		t.Errorf("two different documents share the serial number %s", serial(t, a))
	}
}

func serial(t *testing.T, b []byte) string {
	var d struct {
		SerialNumber string `json:"serialNumber"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return d.SerialNumber
}

// TestSchema validates documents against CycloneDX's official JSON
// schema with python3-jsonschema, and checks that the validator rejects
// a document that breaks it (so a passing run means something).
func TestSchema(t *testing.T) {
	in := sample(t)
	unpinned := sample(t)
	unpinned.K3s = K3s{Channel: "stable", InstallScriptURL: "https://get.k3s.io"}
	unpinned.Image, unpinned.Apt = nil, Apt{}
	for name, in := range map[string]Input{"pinned": in, "channel": unpinned} {
		b, err := ForNode(in)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := validate(t, b); err != nil {
			t.Errorf("%s: the official CycloneDX 1.6 schema rejects the SBOM: %v\n%s", name, err, out)
		}
	}
	b, _ := ForNode(in)
	broken := bytes.Replace(b, []byte(`"serialNumber": "urn:uuid:`), []byte(`"serialNumber": "uuid:`), 1)
	if out, err := validate(t, broken); err == nil || !strings.Contains(out, "serialNumber") {
		t.Errorf("the validator accepted a document with a malformed serial number: %v\n%s", err, out)
	}
}

func validate(t *testing.T, doc []byte) (string, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sbom.json")
	if err := os.WriteFile(p, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/bin/python3", "testdata/validate.py", "testdata/schema", p).CombinedOutput()
	if err != nil && strings.Contains(string(out), "No module named 'jsonschema'") {
		testimage.Missing(t, "python3-jsonschema (apt-get install python3-jsonschema, or make deps)")
	}
	return string(out), err
}

// TestPackagesFromImage: the SBOM of a node lists exactly the packages
// dpkg-query finds installed in the image's root, each with the purl syft
// would give it.
func TestPackagesFromImage(t *testing.T) {
	status, err := os.ReadFile("../dpkg/testdata/status")
	if err != nil {
		t.Fatal(err)
	}
	spec := testimage.Bookworm()
	spec.RootFiles = map[string]string{dpkg.StatusPath: string(status)}
	im, err := diskimg.Open(testimage.For(t, spec), false)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	pkgs, err := dpkg.Read(im)
	if err != nil {
		t.Fatal(err)
	}
	in := sample(t)
	in.Packages = pkgs
	b, err := ForNode(in)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := dpkgQueryInstalled(t, status)
	if !reflect.DeepEqual(s.Packages, want) {
		t.Errorf("SBOM packages = %+v\nwant (dpkg-query) %+v", s.Packages, want)
	}
	for _, purl := range []string{
		`"purl": "pkg:deb/debian/libssl3@3.0.17-1~deb12u2%2Bb1?arch=arm64\u0026distro=debian-12\u0026upstream=openssl%403.0.17-1~deb12u2"`,
		`"purl": "pkg:deb/debian/libc6@2.36-9%2Brpt2%2Bdeb12u12?arch=armhf\u0026distro=debian-12\u0026upstream=glibc"`,
		`"purl": "pkg:deb/debian/openssh-server@1:9.2p1-2%2Bdeb12u7?arch=arm64\u0026distro=debian-12\u0026upstream=openssh"`,
		`"purl": "pkg:deb/debian/tzdata@2025b-0%2Bdeb12u1?arch=all\u0026distro=debian-12"`,
		`"purl": "pkg:deb/debian/vim?arch=arm64\u0026distro=debian-12"`,
	} {
		purl = strings.ReplaceAll(purl, `\u0026`, "&")
		if !bytes.Contains(b, []byte(purl)) {
			t.Errorf("the SBOM lacks %s", purl)
		}
	}
}

func dpkgQueryInstalled(t *testing.T, status []byte) []dpkg.Package {
	t.Helper()
	admin := t.TempDir()
	if err := os.WriteFile(filepath.Join(admin, "status"), status, 0o644); err != nil {
		t.Fatal(err)
	}
	testimage.Tool(t, "dpkg-query")
	out, err := testimage.Run(t, "dpkg-query", "--admindir", admin, "-W", "-f",
		`${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n`)
	if err != nil {
		t.Fatalf("dpkg-query: %v\n%s", err, out)
	}
	var pkgs []dpkg.Package
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		f := strings.Split(line, "\t")
		if len(f) == 6 && f[0] == "installed" {
			pkgs = append(pkgs, dpkg.Package{Name: f[1], Version: f[2], Architecture: f[3], Source: f[4], SourceVersion: f[5]})
		}
	}
	return pkgs
}

// TestParseRoundTrip: what verify reads back is what went in.
func TestParseRoundTrip(t *testing.T) {
	in := sample(t)
	b, err := ForNode(in)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Node != "pi-server" || s.Image == nil || *s.Image != (File{Path: "pi-server.img", SHA256: sum('1')}) ||
		s.BaseSHA256 != sum('a') || s.BaseImageSHA256 != sum('b') {
		t.Errorf("Parse = %+v", s)
	}
	want := []File{{Path: "cmdline.txt", SHA256: sum('f')}, {Path: "pibake/firstboot.sh", SHA256: sum('e')},
		{Path: "pibake/k3s-config.yaml", Secret: true}, {Path: "userconf.txt", Secret: true}}
	if !reflect.DeepEqual(s.Payload, want) {
		t.Errorf("Parse payload = %+v; want %+v", s.Payload, want)
	}
}

// TestNoSecretSums: a file that holds a secret is listed without a sum.
func TestNoSecretSums(t *testing.T) {
	in := sample(t)
	in.Payload[1].SHA256 = sum('7')
	if _, err := ForNode(in); err == nil || !strings.Contains(err.Error(), "pibake/k3s-config.yaml holds a secret but has a sum") {
		t.Errorf("ForNode with a secret file's sum = %v; want a refusal", err)
	}
}

func TestForNodeErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Input)
		want   string
	}{
		{name: "no hostname", change: func(in *Input) { in.Node.Hostname = "" }, want: "no node hostname"},
		{name: "bad base sum", change: func(in *Input) { in.Base.SHA256 = "ABC" }, want: `base image sha256 is "ABC"`},
		{name: "payload without sum", change: func(in *Input) { in.Payload[0].SHA256 = "" }, want: "payload file pibake/firstboot.sh is \"\""},
		{name: "no os id", change: func(in *Input) { in.Base.OSID = "" }, want: "no os-release ID"},
	}
	for _, tt := range tests {
		in := sample(t)
		tt.change(&in)
		if _, err := ForNode(in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ForNode = %v; want an error containing %q", tt.name, err, tt.want)
		}
	}
}
