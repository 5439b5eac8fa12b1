// Package supplytest makes a build directory the way phase 2 of issue 26
// will have pibake build write one — node images from a release-shaped
// base, their SBOMs, delta.json, provenance.json, SHA256SUMS and the two
// signatures — from the supply-chain packages' own APIs, for the tests
// and benchmarks of verify. Only tests import it.
package supplytest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/builder/delta"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/dpkg"
	"github.com/pibake/pibake/builder/provenance"
	"github.com/pibake/pibake/builder/sbom"
	"github.com/pibake/pibake/builder/sign"
	"github.com/pibake/pibake/internal/testimage"
	"golang.org/x/crypto/ssh"
)

// Principal is the signer's name in AllowedSigners.
const Principal = "ci@example.org"

// Stamp is the one timestamp of the fixture's writes.
var Stamp = time.Date(2025, 5, 6, 15, 10, 2, 0, time.UTC)

// Build is a build directory made by Make.
type Build struct {
	Dir, Base string
	Hosts     []string
	// AllowedSigners lists the key that signed SHA256SUMS and
	// provenance.json; Key is its private key file.
	AllowedSigners, Key string
	Spec                testimage.Spec
}

// Image is the path of a node's image.
func (b *Build) Image(host string) string { return filepath.Join(b.Dir, host+".img") }

// Spec is a Bookworm-shaped base whose root holds a dpkg database of n
// packages.
func Spec(packages int) testimage.Spec {
	s := testimage.Bookworm()
	s.RootFiles = map[string]string{dpkg.StatusPath: Status(packages)}
	return s
}

// Status is a realistic dpkg status file of n installed packages (with
// multi-arch, Source fields with and without versions, epochs; about
// 2.6 KB each, as Raspberry Pi OS Lite's 1.6 MB for some 600) and one
// removed package whose conffiles remain.
func Status(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		arch := []string{"arm64", "all", "arm64", "armhf"}[i%4]
		fmt.Fprintf(&b, "Package: pkg%04d\nStatus: install ok installed\nPriority: optional\nSection: libs\nInstalled-Size: %d\n", i, 100+i)
		fmt.Fprintf(&b, "Maintainer: Debian Maintainers <debian@example.org>\nArchitecture: %s\nMulti-Arch: same\n", arch)
		switch i % 3 {
		case 1:
			fmt.Fprintf(&b, "Source: src%03d\n", i/3)
		case 2:
			fmt.Fprintf(&b, "Source: src%03d (1:%d.0-1)\n", i/3, i)
		}
		fmt.Fprintf(&b, "Version: 1:%d.0-1+b1\nDepends: libc6 (>= 2.34), libgcc-s1 (>= 3.0), zlib1g (>= 1:1.1.4)\n", i)
		fmt.Fprintf(&b, "Conffiles:\n /etc/pkg%04d/main.conf 5d3a8db25a7fb1e4d8c2ae1a2e4a7f13\n", i)
		fmt.Fprintf(&b, "Description: package %d\n%s", i, strings.Repeat(" a description as long as a real package's, which fills most of a status file\n", 20))
		b.WriteString("Homepage: https://example.org/\n\n")
	}
	b.WriteString("Package: removed\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1\nMaintainer: x <x@example.org>\nDescription: gone\n")
	return b.String()
}

// Payload is a node's boot partition files: name to content. Two hold
// secrets.
func Payload(host string) map[string]string {
	return map[string]string{
		"pibake/firstboot.sh":    strings.Repeat("#!/bin/sh\n# first boot of a pibake node\n", 200),
		"pibake/node.json":       fmt.Sprintf("{\"hostname\": %q, \"role\": \"agent\"}\n", host),
		"pibake/node.env":        "PIBAKE_HOSTNAME=" + host + "\n",
		"pibake/k3s-config.yaml": "token: " + strings.Repeat("s3cret", 6) + "\nnode-name: " + host + "\n",
		"userconf.txt":           "pi:*\n",
	}
}

// secret says which payload files hold secrets.
func secret(path string) bool { return path == "pibake/k3s-config.yaml" || path == "userconf.txt" }

// Make builds the directory for hosts from a base of spec.
func Make(t testing.TB, spec testimage.Spec, hosts ...string) *Build {
	t.Helper()
	b := &Build{Dir: t.TempDir(), Hosts: hosts, Spec: spec}
	b.Base = testimage.For(t, spec)
	ctx := context.Background()
	baseRec, err := delta.HashBase(ctx, b.Base)
	if err != nil {
		t.Fatal(err)
	}
	pkgs := basePackages(t, b.Base)
	rec := &delta.Record{Base: *baseRec}
	sums := map[string]string{}
	for _, h := range hosts {
		n, err := Node(ctx, b.Base, b.Image(h), h, baseRec)
		if err != nil {
			t.Fatal(err)
		}
		rec.Nodes = append(rec.Nodes, *n)
		sums[n.File] = n.SHA256
		doc, err := sbom.ForNode(SBOMInput(h, n.SHA256, baseRec.SHA256, pkgs))
		if err != nil {
			t.Fatal(err)
		}
		sums[sbom.FileName(h)] = write(t, b.Dir, sbom.FileName(h), doc)
	}
	d, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sums[delta.File] = write(t, b.Dir, delta.File, d)
	prov, err := provenance.Build(ProvenanceInput(sums, baseRec.SHA256))
	if err != nil {
		t.Fatal(err)
	}
	sums["provenance.json"] = write(t, b.Dir, "provenance.json", prov)
	write(t, b.Dir, "SHA256SUMS", Sums(sums))
	b.signAll(t)
	return b
}

// Node makes one node's image from the base, as a build does (clone,
// payload onto the boot partition), and records its delta.
func Node(ctx context.Context, base, img, host string, rec *delta.Base) (*delta.Node, error) {
	if err := testimage.CopySparse(img, base); err != nil {
		return nil, err
	}
	span, err := WritePayload(img, host)
	if err != nil {
		return nil, err
	}
	n, err := delta.ForNode(ctx, rec, base, img, span)
	if err != nil {
		return nil, err
	}
	n.Hostname, n.File = host, filepath.Base(img)
	n.SHA256, err = fileSum(img)
	return n, err
}

// WritePayload writes host's payload to the image's boot partition and
// returns the edit span (the bytes a build edits: through the root's
// superblock).
func WritePayload(img, host string) (int64, error) {
	im, err := diskimg.Open(img, true)
	if err != nil {
		return 0, err
	}
	e := diskimg.Edit{CmdlineAdd: []string{"cgroup_memory=1", "cgroup_enable=memory"}, Time: Stamp}
	for p, data := range Payload(host) {
		e.Files = append(e.Files, diskimg.File{Path: p, Data: []byte(data)})
	}
	sort.Slice(e.Files, func(i, j int) bool { return e.Files[i].Path < e.Files[j].Path })
	if err := im.Apply(e); err != nil {
		im.Close()
		return 0, err
	}
	span := im.RootPartition().Offset() + 4096
	return span, im.Close()
}

func basePackages(t testing.TB, base string) []dpkg.Package {
	t.Helper()
	im, err := diskimg.Open(base, false)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	pkgs, err := dpkg.Read(im)
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// SBOMInput is node host's SBOM input.
func SBOMInput(host, imageSum, rawBaseSum string, pkgs []dpkg.Package) sbom.Input {
	in := sbom.Input{
		PibakeVersion: "v0.9.0-test", Cluster: "lab",
		Node:  sbom.Node{Hostname: host, Role: "agent", BuildID: "0123456789abcdef"},
		Image: &sbom.File{Path: host + ".img", SHA256: imageSum},
		Base: sbom.Base{Source: "raspios_lite_arm64:latest", URL: "https://downloads.raspberrypi.com/raspios_lite_arm64/images/x/base.img.xz",
			SHA256: strings.Repeat("a", 64), ImageSHA256: rawBaseSum, Released: Stamp,
			OSID: "debian", OSVersionID: "12", PrettyName: "Debian GNU/Linux 12 (bookworm)", Codename: "bookworm"},
		Packages: pkgs,
		K3s:      sbom.K3s{Channel: "stable", InstallScriptURL: "https://get.k3s.io"},
		Apt:      sbom.Apt{Packages: []string{"vim"}},
	}
	for p, data := range Payload(host) {
		f := sbom.File{Path: p, Size: int64(len(data)), Secret: secret(p)}
		if !f.Secret {
			f.SHA256 = hexSum([]byte(data))
		}
		in.Payload = append(in.Payload, f)
	}
	return in
}

// ProvenanceInput has every file of sums as a subject.
func ProvenanceInput(sums map[string]string, rawBaseSum string) provenance.Input {
	in := provenance.Input{
		PibakeVersion: "v0.9.0-test", GoVersion: "go1.26", Cluster: "lab",
		Recipe: "lab.hcl", RecipeHash: strings.Repeat("0", 64),
		Base:       provenance.Artifact{URI: "https://downloads.raspberrypi.com/raspios_lite_arm64/images/x/base.img.xz", SHA256: strings.Repeat("a", 64)},
		BaseSource: "raspios_lite_arm64:latest", BaseRawSHA256: rawBaseSum, K3sChannel: "stable",
	}
	for name, s := range sums {
		in.Subjects = append(in.Subjects, provenance.Artifact{Name: name, SHA256: s})
	}
	return in
}

// Sums is SHA256SUMS for sums, sorted by name.
func Sums(sums map[string]string) []byte {
	names := make([]string, 0, len(sums))
	for n := range sums {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s  %s\n", sums[n], n)
	}
	return []byte(b.String())
}

// signAll signs SHA256SUMS and provenance.json with a new ed25519 key.
func (b *Build) signAll(t testing.TB) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "supplytest")
	if err != nil {
		t.Fatal(err)
	}
	keyDir := t.TempDir()
	b.Key = filepath.Join(keyDir, "id_ed25519")
	if err := os.WriteFile(b.Key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	b.AllowedSigners = filepath.Join(keyDir, "allowed_signers")
	line := Principal + " " + string(ssh.MarshalAuthorizedKey(sp))
	if err := os.WriteFile(b.AllowedSigners, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := sign.Load(b.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"SHA256SUMS", "provenance.json"} {
		if _, err := sign.File(s, filepath.Join(b.Dir, f)); err != nil {
			t.Fatal(err)
		}
	}
}

func write(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return hexSum(data)
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileSum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
