package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/nodeimage"
	"github.com/pibake/pibake/internal/testimage"
)

func TestInspect(t *testing.T) {
	img := testimage.For(t, testimage.Bookworm())
	ins, err := Read(img)
	if err != nil {
		t.Fatal(err)
	}
	if ins.Payload != nil || ins.Release.Style != diskimg.StyleBookworm || len(ins.Partitions) != 2 || ins.DiskID != "5e3da9e3" {
		t.Errorf("Read(base) = %+v", ins)
	}

	// A built image: node.json on the boot partition, and a token that
	// inspect must never print.
	im, err := diskimg.Open(img, true)
	if err != nil {
		t.Fatal(err)
	}
	err = im.Apply(diskimg.Edit{Files: []diskimg.File{
		{Path: "pibake/node.json", Data: []byte(`{"hostname":"pi-1","role":"agent","cluster":"lab","joins":"https://10.0.0.1:6443","method":"systemd-run","build_id":"b1"}`)},
		{Path: "pibake/k3s-config.yaml", Data: []byte("token: \"inspect-secret-0123456789\"\n")},
	}})
	im.Close()
	if err != nil {
		t.Fatal(err)
	}
	ins, err = Read(img)
	if err != nil {
		t.Fatal(err)
	}
	var text, js bytes.Buffer
	if err := ins.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := ins.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hostname:   raspberrypi (the base OS's; first boot makes it pi-1, from the payload below)", "hostname: pi-1", "role:     agent", "joins:    https://10.0.0.1:6443", "0x0c", "bootfs", "rootfs", "Debian GNU/Linux 12 (bookworm)"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("inspect text lacks %q:\n%s", want, text.String())
		}
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Payload == nil || back.Payload.Role != "agent" {
		t.Errorf("inspect JSON = %s (%v)", js.String(), err)
	}
	if strings.Contains(text.String()+js.String(), "inspect-secret") {
		t.Error("inspect printed the token")
	}
}

// TestInspectXZ: an .img.xz, as pibake and xz write it, is inspected where
// it lies, with the same findings as the image itself and no file written.
func TestInspectXZ(t *testing.T) {
	xzTool := testimage.Tool(t, "xz")
	img := testimage.For(t, smallTrixie())
	want, err := Read(img)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ours := filepath.Join(dir, "ours.img.xz")
	if err := nodeimage.CompressXZ(context.Background(), img, ours, 2); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(dir, "theirs.img.xz")
	out, err := exec.Command(xzTool, "-T1", "-0", "-k", "-c", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(theirs, out, 0o600)
	for _, p := range []string{ours, theirs} {
		got, err := Read(p)
		if err != nil {
			t.Fatalf("Read(%s): %v", filepath.Base(p), err)
		}
		got.Path = want.Path
		a, _ := json.Marshal(got)
		b, _ := json.Marshal(want)
		if !bytes.Equal(a, b) {
			t.Errorf("Read(%s) =\n%s\nthe image itself:\n%s", filepath.Base(p), a, b)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("inspecting wrote files: %v", entries)
	}
	// Not an image inside: an error naming the file, not a panic.
	junk := filepath.Join(dir, "junk.img.xz")
	out, _ = exec.Command("sh", "-c", "head -c 100000 /dev/urandom | "+xzTool+" -c").Output()
	os.WriteFile(junk, out, 0o600)
	if _, err := Read(junk); err == nil || !strings.Contains(err.Error(), "junk.img.xz") {
		t.Errorf("Read(random data .xz) = %v", err)
	}
}

// smallTrixie is a Trixie-shaped image (512-byte clusters, 8 MiB
// alignment, cloud-init) with a 40 MiB boot partition and a 16 MiB root,
// a tenth of a release's bytes to compress and read through xz: the
// tests that use it are about reading, not about the release's layout
// (TestInspect keeps that).
func smallTrixie() testimage.Spec {
	s := testimage.Trixie()
	s.BootMiB, s.RootMiB = 40, 16
	return s
}
