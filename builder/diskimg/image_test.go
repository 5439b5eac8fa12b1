package diskimg

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

func TestDetectRelease(t *testing.T) {
	tests := []struct {
		spec      testimage.Spec
		style     Style
		machineID string
		cloudInit bool
		cluster   int64
		codename  string
	}{
		{spec: testimage.Bookworm(), style: StyleBookworm, machineID: MachineIDEmpty, cluster: 2048, codename: "bookworm"},
		{spec: testimage.Trixie(), style: StyleTrixie, machineID: MachineIDUninitialized, cloudInit: true, cluster: 512, codename: "trixie"},
	}
	for _, tt := range tests {
		t.Run(tt.spec.Name, func(t *testing.T) {
			im, err := Open(testimage.For(t, tt.spec), false)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			r, err := im.DetectRelease()
			if err != nil {
				t.Fatal(err)
			}
			if r.Style != tt.style || r.MachineID != tt.machineID || r.CloudInit != tt.cloudInit || len(r.Customised) != 0 || r.Bootable() != nil ||
				r.BootClusterBytes != tt.cluster || r.Codename != tt.codename || r.Hostname != "raspberrypi" ||
				r.BootStartSector != tt.spec.BootStart {
				t.Errorf("DetectRelease = %+v", r)
			}
			if len(im.Partitions) != 2 || im.BootPartition().Label != "bootfs" || im.RootPartition().Label != "rootfs" ||
				im.BootPartition().Type != TypeFAT32LBA || im.RootPartition().StartSector != tt.spec.RootStart() {
				t.Errorf("partitions = %+v", im.Partitions)
			}
			if got := strings.ToLower(strings.TrimSpace(im.partUUID(2))); got != tt.spec.PartUUID(2) {
				t.Errorf("PartUUID(2) = %s; want %s", got, tt.spec.PartUUID(2))
			}
		})
	}
}

// TestCustomisedBases finds what shows that an image was already set up
// for a machine, by Raspberry Pi Imager or by pibake, and an unbootable
// cmdline.txt. An official image (TestDetectRelease) shows none of it.
func TestCustomisedBases(t *testing.T) {
	tests := []struct {
		name    string
		spec    testimage.Spec
		edit    Edit
		want    string // a fragment of the one finding
		cmdline string // Bootable's error, when the edit breaks it
	}{
		{name: "Imager firstrun.sh", spec: testimage.Bookworm(),
			edit: Edit{Files: []File{{Path: "firstrun.sh", Data: []byte("#!/bin/bash\n")}}, CmdlineAdd: []string{"systemd.run=/boot/firstrun.sh", "systemd.run_success_action=reboot"}},
			want: "firstrun.sh is present"},
		{name: "userconf.txt", spec: testimage.Bookworm(), edit: Edit{Files: []File{{Path: "userconf.txt", Data: []byte("pi:$6$x$y\n")}}}, want: "userconf.txt is present"},
		{name: "pibake payload", spec: testimage.Bookworm(),
			edit: Edit{Files: []File{{Path: "pibake/node.json", Data: []byte(`{"hostname":"old-node","build_id":"b1"}`)}}},
			want: `pibake payload for node "old-node" (build b1)`},
		{name: "Imager cloud-init", spec: testimage.Trixie(),
			edit: Edit{Files: []File{{Path: "user-data", Data: []byte("#cloud-config\nhostname: pi7\nusers:\n  - name: ops\n    passwd: $6$secret\n")}}, CmdlineAdd: []string{"ds=nocloud;i=rpi-imager-1"}},
			want: `user-data is not the shipped template (it sets "hostname")`},
		{name: "Imager meta-data", spec: testimage.Trixie(), edit: Edit{Files: []File{{Path: "meta-data", Data: []byte("instance-id: rpi-imager-1\n")}}}, want: `meta-data is not the shipped template (it sets "instance-id")`},
		{name: "network-config with a Wi-Fi key", spec: testimage.Trixie(),
			edit: Edit{Files: []File{{Path: "network-config", Data: []byte("network:\n  version: 2\n  wifis:\n    wlan0:\n      access-points:\n        lab:\n          password: hunter22hunter22\n")}}},
			want: `network-config is not the shipped template (it sets "network")`},
		{name: "no root=", spec: testimage.Bookworm(), edit: Edit{CmdlineRemove: []string{"root=PARTUUID=5e3da9e3-02"}}, cmdline: "no root= argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := testimage.For(t, tt.spec)
			w, err := Open(img, true)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Apply(tt.edit); err != nil {
				t.Fatal(err)
			}
			w.Close()
			im, err := Open(img, false)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			r, err := im.DetectRelease()
			if err != nil {
				t.Fatal(err)
			}
			found := strings.Join(r.Customised, "\n")
			if tt.want != "" && !strings.Contains(found, tt.want) {
				t.Errorf("Customised = %q; want a finding with %q", r.Customised, tt.want)
			}
			if tt.want == "" && len(r.Customised) != 0 {
				t.Errorf("Customised = %q; want none", r.Customised)
			}
			if strings.Contains(found, "secret") || strings.Contains(found, "hunter22") {
				t.Errorf("a finding quotes a secret: %q", r.Customised)
			}
			err = r.Bootable()
			if (err == nil) != (tt.cmdline == "") || err != nil && !strings.Contains(err.Error(), tt.cmdline) {
				t.Errorf("Bootable() = %v; want an error with %q", err, tt.cmdline)
			}
		})
	}
}

// TestBadImages gives every kind of broken input a one-line error naming
// the file and the problem, and leaves the file as it was.
func TestBadImages(t *testing.T) {
	dir := t.TempDir()
	good := testimage.For(t, testimage.Bookworm())
	spec := testimage.Bookworm()
	mk := func(name string, f func(path string)) string {
		p := filepath.Join(dir, name)
		if err := testimage.CopySparse(p, good); err != nil {
			t.Fatal(err)
		}
		f(p)
		return p
	}
	writeAt := func(p string, off int64, b []byte) {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	empty := filepath.Join(dir, "empty.img")
	os.WriteFile(empty, nil, 0o644)
	garbage := filepath.Join(dir, "garbage.img")
	os.WriteFile(garbage, []byte(strings.Repeat("not a disk image ", 200)), 0o644)

	tests := []struct {
		name     string
		path     string
		writable bool
		want     string
	}{
		{name: "missing", path: filepath.Join(dir, "nope.img"), want: "no such file"},
		{name: "directory", path: dir, want: "is a directory"},
		{name: "empty", path: empty, want: "empty or too small"},
		{name: "garbage", path: garbage, want: "no MBR partition table"},
		{name: "truncated", path: mk("truncated.img", func(p string) { os.Truncate(p, spec.RootStart()*512+4096) }), want: "partition 2 ends at byte"},
		{name: "zeroed FAT boot sector", path: mk("zeroed.img", func(p string) { writeAt(p, spec.BootStart*512, make([]byte, 512)) }), want: "partition 1 (FAT32, type 0x0c): no FAT32 boot sector"},
		{name: "FAT16 in a FAT32 partition", path: mk("fat16.img", func(p string) {
			out, err := exec.Command(testimage.Tool(t, "mkfs.fat"), "-F", "16", "--offset", strconv.FormatInt(spec.BootStart, 10), p, strconv.Itoa(testimage.BootSectors/2)).CombinedOutput()
			if err != nil {
				t.Fatalf("mkfs.fat -F 16: %v\n%s", err, out)
			}
		}), want: "partition 1 (FAT32, type 0x0c): no FAT32 boot sector: it holds a FAT16 file system, though the partition type says FAT32"},
		{name: "GPT", path: mk("gpt.img", func(p string) { writeAt(p, 446+4, []byte{0xee}) }), want: "GPT partition table"},
		{name: "no root partition", path: mk("noroot.img", func(p string) { writeAt(p, 446+16, make([]byte, 16)) }), want: "no ext4 root partition"},
		{name: "no boot partition", path: mk("noboot.img", func(p string) { writeAt(p, 446+4, []byte{0x83}) }), want: "no FAT32 boot partition"},
		{name: "read-only file", path: mk("ro.img", func(p string) { os.Chmod(p, 0o444) }), writable: true, want: "the file is read-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := os.Stat(tt.path)
			im, err := Open(tt.path, tt.writable)
			if err == nil {
				im.Close()
				t.Fatalf("Open(%s) succeeded", tt.name)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || !strings.Contains(msg, filepath.Base(tt.path)) || strings.Contains(msg, "\n") {
				t.Errorf("Open(%s) = %q; want one line naming the file and %q", tt.name, msg, tt.want)
			}
			// Any write would move the modification time or the size.
			if after, _ := os.Stat(tt.path); before != nil && (after.ModTime() != before.ModTime() || after.Size() != before.Size()) {
				t.Error("a failed Open changed the file")
			}
		})
	}
}

// FuzzOpen feeds mutated partition tables and FAT boot sectors to the
// reader: whatever they say, pibake returns an error or a result, never a
// panic.
func FuzzOpen(f *testing.F) {
	base := filepath.Join(f.TempDir(), "base.img")
	for _, tool := range testimage.Tools {
		testimage.Tool(f, tool)
	}
	if err := testimage.Build(base, testimage.Bookworm()); err != nil {
		f.Fatal(err) // a fuzz run that fuzzes nothing must not pass
	}
	spec := testimage.Bookworm()
	orig := make([]byte, 1024)
	in, _ := os.Open(base)
	in.ReadAt(orig[:512], 0)
	in.ReadAt(orig[512:], spec.BootStart*512)
	in.Close()
	f.Add(orig)
	zeroFAT := append([]byte(nil), orig...)
	binary.LittleEndian.PutUint32(zeroFAT[512+36:], 0)
	f.Add(zeroFAT)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 1024 {
			b = append(b, make([]byte, 1024-len(b))...)
		}
		w, err := os.OpenFile(base, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		w.WriteAt(b[:512], 0)
		w.WriteAt(b[512:1024], spec.BootStart*512)
		w.Close()
		defer func() { // restore for the next input
			w, _ := os.OpenFile(base, os.O_WRONLY, 0)
			w.WriteAt(orig[:512], 0)
			w.WriteAt(orig[512:], spec.BootStart*512)
			w.Close()
		}()
		im, err := Open(base, false)
		if err != nil {
			return
		}
		defer im.Close()
		im.DetectRelease()
		im.FreeBootBytes()
		im.NewestBootTime()
	})
}
