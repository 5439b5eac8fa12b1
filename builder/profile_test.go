package builder

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/inspect"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/internal/configtxt"
	"github.com/pibake/pibake/internal/testimage"
	"github.com/pibake/pibake/recipes"
)

// TestBuildHardwareProfiles is issue 25's acceptance test: one recipe
// (recipes/examples/ssd.hcl) with a Pi 5 NVMe server, a Pi 4 USB agent
// with a usb-storage quirk and an agent without a profile, built on
// Bookworm- and Trixie-shaped images. In each node's image config.txt is
// the base's, byte for byte, then the node's block (none where the profile
// sets nothing there: the base's file, untouched); cmdline.txt keeps every
// base argument in order and only the Pi 4 has the quirk; every other
// file of the base's boot partition reads back unchanged (mtools), and no
// byte outside the boot partition changed; fsck.fat is clean.
func TestBuildHardwareProfiles(t *testing.T) {
	for _, spec := range []testimage.Spec{testimage.Bookworm(), testimage.Trixie()} {
		t.Run(spec.Name, func(t *testing.T) {
			raw := testimage.For(t, spec)
			r, diags := recipes.Load(hclparse.NewParser(), filepath.Join("..", "recipes", "examples", "ssd.hcl"))
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			opt := Options{OutDir: filepath.Join(t.TempDir(), "out"), Jobs: 2, Version: "test", Image: raw,
				Base: base.Options{Cache: base.Cache{Dir: filepath.Join(t.TempDir(), "cache")}}}
			res, err := Build(context.Background(), r, opt)
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 3 {
				t.Fatalf("built %d nodes; want 3", len(res))
			}
			bootOff, bootSize := spec.BootStart*512, int64(testimage.BootSectors)*512
			baseFiles := bootFileList(t, raw, bootOff)
			for _, n := range res {
				i := slices.IndexFunc(r.Nodes, func(rn recipes.Node) bool { return rn.Hostname == n.Hostname })
				node := &r.Nodes[i]
				t.Run(n.Hostname, func(t *testing.T) {
					testimage.FsckFAT(t, n.File, bootOff, bootSize)
					checkConfigTxt(t, n.File, bootOff, spec, node)
					checkCmdline(t, n.File, bootOff, spec, node)
					for _, f := range baseFiles {
						if f == "cmdline.txt" || f == "config.txt" || slices.Contains([]string{"meta-data", "user-data", "network-config"}, f) {
							continue // edited, or the cloud-init seed the payload writes
						}
						if testimage.Mtype(t, n.File, bootOff, f) != testimage.Mtype(t, raw, bootOff, f) {
							t.Errorf("%s changed", f)
						}
					}
					if d := differentBytes(t, raw, n.File, 0, bootOff); d != 0 {
						t.Errorf("%d bytes before the boot partition changed", d)
					}
					if d := differentBytes(t, raw, n.File, bootOff+bootSize, spec.Size()-bootOff-bootSize); d != 0 {
						t.Errorf("%d bytes after the boot partition changed", d)
					}
				})
			}
		})
	}
}

// checkConfigTxt: the base's config.txt, then exactly the node's block.
func checkConfigTxt(t *testing.T, img string, off int64, spec testimage.Spec, n *recipes.Node) {
	t.Helper()
	got := testimage.Mtype(t, img, off, "config.txt")
	stock := spec.ConfigTxt()
	block := firstboot.ConfigTxt(n)
	if n.Hardware.Model == recipes.ModelPi5 && !slices.Contains(block, "dtparam=pciex1") {
		t.Fatalf("the Pi 5 NVMe node's block lacks dtparam=pciex1: %q", block)
	}
	if block == nil {
		if got != stock {
			t.Errorf("config.txt of a node without config.txt settings = %q; want the base's", got)
		}
		return
	}
	if !strings.HasPrefix(got, stock) {
		t.Fatalf("config.txt does not keep the base's file before the block:\n%s", got)
	}
	lines, ok, err := configtxt.Block([]byte(got))
	if err != nil || !ok || !slices.Equal(lines, block) {
		t.Errorf("config.txt block = %q, %v, %v; want %q", lines, ok, err, block)
	}
	want, err := configtxt.Patch([]byte(stock), block)
	if err != nil || got != string(want) {
		t.Errorf("config.txt = %q; want %q (%v)", got, want, err)
	}
}

// checkCmdline: every base argument in order, then pibake's; the quirk
// only where the profile has one.
func checkCmdline(t *testing.T, img string, off int64, spec testimage.Spec, n *recipes.Node) {
	t.Helper()
	got := testimage.Mtype(t, img, off, "cmdline.txt")
	if !strings.HasPrefix(got, strings.TrimSpace(spec.Cmdline())+" cgroup_memory=1 cgroup_enable=memory ") || strings.Count(got, "\n") != 1 {
		t.Errorf("cmdline.txt = %q", got)
	}
	quirk := strings.Contains(got, " usb-storage.quirks=152d:0578:u ")
	if want := len(n.Hardware.USBStorageQuirks) > 0; quirk != want {
		t.Errorf("cmdline.txt = %q; quirk there: %v, want %v", got, quirk, want)
	}
}

// bootFileList lists the files of a boot partition (mdir -/ -b).
func bootFileList(t *testing.T, img string, off int64) []string {
	t.Helper()
	out, err := testimage.Run(t, "mdir", "-/", "-b", "-i", fmt.Sprintf("%s@@%d", img, off), "::")
	if err != nil {
		t.Fatalf("mdir: %v\n%s", err, out)
	}
	var files []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if name := strings.TrimPrefix(l, "::/"); !strings.HasSuffix(name, "/") {
			files = append(files, name)
		}
	}
	return files
}

// differentBytes counts the bytes of [off, off+n) that differ between two
// files, 4 MiB at a time.
func differentBytes(t *testing.T, a, b string, off, n int64) int {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 4<<20), make([]byte, 4<<20)
	diff := 0
	for p := off; p < off+n; p += int64(len(ba)) {
		m := min(int64(len(ba)), off+n-p)
		if _, err := fa.ReadAt(ba[:m], p); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if _, err := fb.ReadAt(bb[:m], p); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		for i := range m {
			if ba[i] != bb[i] {
				diff++
			}
		}
	}
	return diff
}

// bootedStatus is a status record as a Pi 5's first boot writes it
// (firstboot/templates/lib.sh, bootfacts.sh) after staging its BOOT_ORDER
// from the SD card it booted once.
const bootedStatus = `{"version":1,"node":"pi5-nvme","role":"server","build":"b1","stage":"done","state":"ok","time":"2026-12-01T10:00:00Z","boot":"0a1b2c3d","reason":"first boot finished","log":[],"facts":{"model":"Raspberry Pi 5 Model B Rev 1.0","root":"mmcblk0p2","transport":"mmc","usb_id":"","usb_driver":"","memory_cgroup":true,"boot_order":"0xf461","boot_order_default":false,"boot_order_staged":"0xf146","bootloader_version":"2026/05/26 15:01:25 (timestamp 1779807685)","bootloader_source":"rpi-eeprom-config","bootloader_problem":""}}
`

// TestInspectHardwareProfile: inspect shows a built image's config.txt
// block and profile, and the boot facts of a card that has booted, from
// the image and from its boot partition mounted on another computer.
func TestInspectHardwareProfile(t *testing.T) {
	spec := testimage.Trixie()
	img := testimage.For(t, spec)
	r, diags := recipes.Load(hclparse.NewParser(), filepath.Join("..", "recipes", "examples", "ssd.hcl"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	node := &r.Nodes[0]
	p, err := firstboot.Render(&r.Cluster, node, firstboot.Options{Token: testToken, BuildID: "b1", Base: firstboot.Base{CloudInit: true, SystemdFirstBoot: true}})
	if err != nil {
		t.Fatal(err)
	}
	edit := diskimg.Edit{CmdlineAdd: p.CmdlineAdd, ConfigTxt: p.ConfigTxt,
		Files: []diskimg.File{{Path: "pibake/status.json", Data: []byte(bootedStatus)}, {Path: "pibake/status.log", Data: []byte(bootedStatus)}}}
	for _, f := range p.Files {
		if f.Path == "pibake/node.json" {
			edit.Files = append(edit.Files, diskimg.File{Path: f.Path, Data: f.Data})
		}
	}
	im, err := diskimg.Open(img, true)
	if err != nil {
		t.Fatal(err)
	}
	err = im.Apply(edit)
	im.Close()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() // the boot partition, as mounted elsewhere
	for _, name := range []string{"cmdline.txt", "config.txt", "pibake/node.json", "pibake/status.json", "pibake/status.log"} {
		os.MkdirAll(filepath.Join(dir, "pibake"), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(testimage.Mtype(t, img, spec.BootStart*512, name)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, where := range []string{img, dir} {
		ins, err := inspect.Read(where)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ins.ConfigTxt, p.ConfigTxt) || ins.Status == nil || ins.Status.Facts == nil || ins.Status.Facts.BootOrderStaged != "0xf146" {
			t.Errorf("inspect.Read(%s) = block %q, status %+v", where, ins.ConfigTxt, ins.Status)
		}
		var text strings.Builder
		if err := ins.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		mustHave := []string{
			"  hardware: pi5 from nvme, 1 config.txt line, BOOT_ORDER=0xf146 applied\n",
			"config.txt: pibake's block, after the image's own lines:\n  | # pi5-nvme: model pi5, boots from nvme\n  | [all]\n  | [pi5]\n  | dtparam=pciex1\n",
			"booted:     root mmcblk0p2 on mmc; memory cgroup present; Raspberry Pi 5 Model B Rev 1.0\n",
			"bootloader: BOOT_ORDER 0xf461; version 2026/05/26 15:01:25 (timestamp 1779807685); read with rpi-eeprom-config; BOOT_ORDER 0xf146 staged for the next reboot\n",
		}
		for _, want := range mustHave {
			if !strings.Contains(text.String(), want) {
				t.Errorf("inspect %s lacks %q:\n%s", where, want, text.String())
			}
		}
	}
}
