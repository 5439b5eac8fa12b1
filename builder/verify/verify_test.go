package verify

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pibake/pibake/builder/sbom"
	"github.com/pibake/pibake/internal/supplytest"
	"github.com/pibake/pibake/internal/testimage"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.root != "" {
		os.RemoveAll(fixture.root)
	}
	testimage.Cleanup()
	os.Exit(code)
}

// spec is supplytest's Bookworm-shaped base (40 packages) with the boot
// partition just big enough for FAT32 with 2 KiB clusters and a 16 MiB
// root: verify's subject is a build directory, not the release-size
// layout, and a quarter of the bytes is a quarter of the hashing.
func spec() testimage.Spec {
	s := supplytest.Spec(40)
	s.BootMiB, s.RootMiB = 132, 16
	return s
}

// fixture is the one build directory the tests start from, made once per
// test process outside any test's temporary directory.
var fixture struct {
	once sync.Once
	root string
	b    *supplytest.Build
}

// build is a fresh copy of the fixture's build directory (the tests
// tamper with it) sharing the fixture's base and keys, which no test
// changes.
func build(t *testing.T) *supplytest.Build {
	t.Helper()
	fixture.once.Do(func() { fixture.b = makeFixture(t) })
	if fixture.b == nil {
		t.Fatal("the shared build directory could not be made (see the first test's failure)")
	}
	b := *fixture.b
	b.Dir = filepath.Join(t.TempDir(), "build")
	copyTree(t, fixture.b.Dir, b.Dir)
	return &b
}

// makeFixture makes the build directory and moves what it needs out of
// t's temporary directories, which go when t ends.
func makeFixture(t *testing.T) *supplytest.Build {
	t.Helper()
	made := supplytest.Make(t, spec(), "pi-server", "pi-agent")
	root, err := os.MkdirTemp("", "verify-fixture-")
	if err != nil {
		t.Fatal(err)
	}
	fixture.root = root
	b := *made
	b.Dir, b.Base = filepath.Join(root, "build"), filepath.Join(root, "base.img")
	b.Key, b.AllowedSigners = filepath.Join(root, "id_ed25519"), filepath.Join(root, "allowed_signers")
	copyTree(t, made.Dir, b.Dir)
	for from, to := range map[string]string{made.Base: b.Base, made.Key: b.Key, made.AllowedSigners: b.AllowedSigners} {
		copyTree(t, from, to)
	}
	return &b
}

// copyTree copies a file or directory with cp -a, keeping holes.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", "--sparse=always", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", from, to, err, out)
	}
}

func verifyDir(t *testing.T, b *supplytest.Build, opt Options) *Report {
	t.Helper()
	if opt.AllowedSigners == "" {
		opt.AllowedSigners = b.AllowedSigners
	}
	r, err := Dir(context.Background(), b.Dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func text(r *Report) string {
	var buf bytes.Buffer
	r.WriteText(&buf)
	return buf.String()
}

// failedWith checks that exactly the named checks failed, each with a
// problem containing the given text.
func failedWith(t *testing.T, r *Report, want map[string]string) {
	t.Helper()
	for _, c := range r.Checks {
		sub, expected := want[c.Name]
		switch {
		case expected && c.Status != StatusFailed:
			t.Errorf("check %q is %s; want it failed with %q", c.Name, c.Status, sub)
		case !expected && c.Status == StatusFailed:
			t.Errorf("check %q failed too: %v", c.Name, c.Problems)
		case expected && !strings.Contains(strings.Join(c.Problems, "\n"), sub):
			t.Errorf("check %q problems %q lack %q", c.Name, c.Problems, sub)
		}
	}
	for name := range want {
		if r.Find(name) == nil {
			t.Errorf("no check %q in the report:\n%s", name, text(r))
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", text(r))
	}
}

// TestDirVerified: an untouched build directory passes every check,
// signatures included.
func TestDirVerified(t *testing.T) {
	b := build(t)
	r := verifyDir(t, b, Options{})
	if r.Failed() {
		t.Fatalf("an untouched build fails verify:\n%s", text(r))
	}
	for _, name := range []string{"SHA256SUMS", "signature SHA256SUMS.sig", "signature provenance.json.sig",
		"image pi-agent.img", "image pi-server.img", "sbom pi-agent.cdx.json", "sbom pi-server.cdx.json", "provenance provenance.json"} {
		if c := r.Find(name); c == nil || c.Status != StatusOK {
			t.Errorf("check %q = %+v; want ok", name, c)
		}
	}
	t.Logf("\n%s", text(r))
}

// TestTampering flips one byte in each place issue 26 names — the root
// partition, a boot file of the base, a boot file of pibake's,
// SHA256SUMS, a signature — and checks that verify names each, and only
// what it touched.
func TestTampering(t *testing.T) {
	spec := spec()
	bootFrom, rootFrom := spec.BootStart*512, spec.RootStart()*512
	tests := []struct {
		name   string
		tamper func(t *testing.T, b *supplytest.Build)
		want   map[string]string
	}{
		{name: "root partition", tamper: func(t *testing.T, b *supplytest.Build) {
			supplytest.Flip(t, b.Image("pi-agent"), rootFrom+5<<20+321, 0x20)
		}, want: imageChanged("pi-agent", "partition 2 (ext4 rootfs), bytes")},
		{name: "base boot file", tamper: func(t *testing.T, b *supplytest.Build) {
			supplytest.Flip(t, b.Image("pi-agent"), supplytest.Offset(t, b.Image("pi-agent"), []byte("kernel image stand-in"), bootFrom, rootFrom)+3, 0x20)
		}, want: imageChanged("pi-agent", "partition 1 (vfat bootfs), bytes")},
		{name: "pibake boot file", tamper: func(t *testing.T, b *supplytest.Build) {
			supplytest.Flip(t, b.Image("pi-server"), supplytest.Offset(t, b.Image("pi-server"), []byte("# first boot of a pibake node"), bootFrom, rootFrom)+4, 0x20)
		}, want: with(imageChanged("pi-server", "differs inside pibake's own changes"),
			"sbom pi-server.cdx.json", "boot file pibake/firstboot.sh differs from the SBOM's")},
		{name: "SHA256SUMS", tamper: func(t *testing.T, b *supplytest.Build) {
			p := filepath.Join(b.Dir, "SHA256SUMS")
			sums, _ := os.ReadFile(p)
			line := bytes.Index(sums, []byte("  pi-agent.img\n"))
			sums[line-1] = "01"[map[bool]int{true: 1}[sums[line-1] == '0']] // another hex digit
			os.WriteFile(p, sums, 0o644)
		}, want: map[string]string{
			"signature SHA256SUMS.sig": "the signature does not match the file",
			"SHA256SUMS":               "pi-agent.img: SHA-256 is",
		}},
		{name: "signature", tamper: func(t *testing.T, b *supplytest.Build) {
			p := filepath.Join(b.Dir, "provenance.json.sig")
			sig, _ := os.ReadFile(p)
			// A character of the base64 body, past the public key.
			supplytest.Flip(t, p, int64(len(sig))-60, 0x20)
		}, want: map[string]string{"signature provenance.json.sig": "bad signature"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := build(t) // before Parallel: the first one makes the fixture
			t.Parallel()
			tt.tamper(t, b)
			r := verifyDir(t, b, Options{})
			if !r.Failed() {
				t.Fatalf("verify passes a tampered build:\n%s", text(r))
			}
			failedWith(t, r, tt.want)
		})
	}
}

// imageChanged is what a changed image fails: its bytes (named with
// what), its sum, and the provenance's subject.
func imageChanged(host, what string) map[string]string {
	return map[string]string{
		"image " + host + ".img":     what,
		"SHA256SUMS":                 host + ".img: SHA-256 is",
		"provenance provenance.json": "subject " + host + ".img has SHA-256",
	}
}

func with(m map[string]string, check, problem string) map[string]string {
	m[check] = problem
	return m
}

// TestExactWithBase: with the base image at hand, a changed byte is named
// exactly.
func TestExactWithBase(t *testing.T) {
	b := build(t)
	at := b.Spec.RootStart()*512 + 7<<20 + 99
	supplytest.Flip(t, b.Image("pi-agent"), at, 0x20)
	r := verifyDir(t, b, Options{Base: b.Base})
	failedWith(t, r, imageChanged("pi-agent", fmt.Sprintf("partition 2 (ext4 rootfs), bytes %d-%d (1 bytes): differs from the base image", at, at)))
}

// TestCard verifies a card: a device longer than the image, holding it
// (a file here), found by the hostname on its boot partition; a byte
// changed on the card is named exactly, from the built image beside it.
func TestCard(t *testing.T) {
	b := build(t)
	card := filepath.Join(t.TempDir(), "card")
	if err := testimage.CopySparse(card, b.Image("pi-server")); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(card, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(bytes.Repeat([]byte("old data on the card "), 5000))
	f.Close()
	opt := Options{Dir: b.Dir, AllowedSigners: b.AllowedSigners}
	r, err := Image(context.Background(), card, opt)
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed() {
		t.Fatalf("an untouched card fails verify:\n%s", text(r))
	}
	at := b.Spec.RootStart()*512 + 3<<20 + 1
	supplytest.Flip(t, card, at, 0x20)
	r, err = Image(context.Background(), card, opt)
	if err != nil {
		t.Fatal(err)
	}
	failedWith(t, r, map[string]string{"image " + card + " (node pi-server)": fmt.Sprintf("(ext4 rootfs), bytes %d-%d (1 bytes): differs from the base image", at, at)})
	if _, err := Image(context.Background(), card, Options{}); err == nil || !strings.Contains(err.Error(), "--dir") {
		t.Errorf("Image without a build directory = %v; want a hint at --dir", err)
	}
}

// TestSBOMDescribesImage: an SBOM that lists a package the image does not
// have (re-listed in SHA256SUMS, so only its content is wrong) fails.
func TestSBOMDescribesImage(t *testing.T) {
	b := build(t)
	p := filepath.Join(b.Dir, sbom.FileName("pi-agent"))
	doc, _ := os.ReadFile(p)
	doc = bytes.Replace(doc, []byte(`"version": "1:7.0-1+b1"`), []byte(`"version": "1:7.0-2"`), 1)
	os.WriteFile(p, doc, 0o644)
	r := verifyDir(t, b, Options{AllowedSigners: ""})
	c := r.Find("sbom pi-agent.cdx.json")
	if c == nil || c.Status != StatusFailed || !strings.Contains(strings.Join(c.Problems, "\n"), "package pkg0007:armhf is 1:7.0-1+b1 in the image, 1:7.0-2 in the SBOM") {
		t.Errorf("sbom check = %+v\n%s", c, text(r))
	}
}
