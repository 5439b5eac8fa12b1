package flash

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeDisk is a disk in a fake sysfs.
type fakeDisk struct {
	name, dev string
	sectors   int64
	usb       bool
	removable bool
	udev      string            // udev database lines
	parts     map[string]string // partition name: major:minor
	holders   map[string]string // partition (or disk) name: holder
	slaves    []string          // a device-mapper disk's slaves (partitions)
}

// fakeSystem builds a sysfs, mount table and swap list under a temporary
// root, laid out as Linux lays them out (symlinks from /sys/dev/block and
// /sys/class/block into /sys/devices).
func fakeSystem(t *testing.T, disks []fakeDisk, mountinfo, swaps string) System {
	t.Helper()
	root := t.TempDir()
	write := func(p, data string) {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(from, to string) { // both relative to root
		p := filepath.Join(root, from)
		os.MkdirAll(filepath.Dir(p), 0o755)
		rel, _ := filepath.Rel(filepath.Dir(p), filepath.Join(root, to))
		if err := os.Symlink(rel, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range disks {
		bus := "/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/"
		if d.usb {
			bus = "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/"
		}
		if strings.HasPrefix(d.name, "dm-") || strings.HasPrefix(d.name, "md") {
			bus = "/sys/devices/virtual/block/"
		}
		dir := bus + d.name
		write(dir+"/dev", d.dev)
		write(dir+"/size", strconv.FormatInt(d.sectors, 10))
		write(dir+"/removable", map[bool]string{true: "1", false: "0"}[d.removable])
		os.MkdirAll(filepath.Join(root, dir, "holders"), 0o755)
		link("/sys/dev/block/"+d.dev, dir)
		link("/sys/class/block/"+d.name, dir)
		if d.udev != "" {
			write("/run/udev/data/b"+d.dev, d.udev)
		}
		for p, dev := range d.parts {
			write(dir+"/"+p+"/partition", "1")
			write(dir+"/"+p+"/dev", dev)
			write(dir+"/"+p+"/size", "2048")
			link("/sys/dev/block/"+dev, dir+"/"+p)
			link("/sys/class/block/"+p, dir+"/"+p)
		}
		for part, h := range d.holders {
			hdir := dir
			if part != d.name {
				hdir = dir + "/" + part
			}
			link(hdir+"/holders/"+h, "/sys/devices/virtual/block/"+h)
		}
		for _, s := range d.slaves {
			link(dir+"/slaves/"+s, "/sys/class/block/"+s)
		}
	}
	write("/proc/self/mountinfo", mountinfo)
	write("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n"+swaps)
	return System{Root: root}
}

// mi is a mountinfo line mounting source (major:minor dev) on point.
func mi(dev, point, fstype, source string) string {
	return "29 1 " + dev + " / " + point + " rw,relatime shared:1 - " + fstype + " " + source + " rw\n"
}

// TestRefusals checks every refusal against fake machines, among them the
// disk holding "/" in its usual disguises (a partition, LVM, btrfs's
// anonymous device, a Pi's own SD card): the detection reads only the
// fake root, so no real system disk is ever opened.
func TestRefusals(t *testing.T) {
	const image = 32 << 20
	sata := func(name, dev string, parts map[string]string) fakeDisk {
		return fakeDisk{name: name, dev: dev, sectors: 1 << 30, parts: parts, udev: "E:ID_MODEL=Samsung_SSD_870\nE:ID_SERIAL_SHORT=S5Y1NX0R\nE:ID_BUS=ata\n"}
	}
	stick := fakeDisk{name: "sdb", dev: "8:16", sectors: 1 << 24, usb: true, parts: map[string]string{"sdb1": "8:17"},
		udev: "E:ID_MODEL=Extreme_Pro\nE:ID_SERIAL_SHORT=AA01234\nE:ID_BUS=usb\n"}
	rootOnSDA := mi("8:2", "/", "ext4", "/dev/sda2")
	tests := []struct {
		name       string
		disks      []fakeDisk
		mountinfo  string
		swaps      string
		target     string // disk name
		allowFixed bool
		size       int64
		want       string // in the refusal; "" for none
	}{
		{name: "usb stick", disks: []fakeDisk{sata("sda", "8:0", map[string]string{"sda2": "8:2"}), stick}, mountinfo: rootOnSDA, target: "sdb"},
		{name: "root partition", disks: []fakeDisk{sata("sda", "8:0", map[string]string{"sda1": "8:1", "sda2": "8:2"})}, mountinfo: rootOnSDA, target: "sda", allowFixed: true,
			want: "holds the running system (/)"},
		{name: "root on lvm", disks: []fakeDisk{sata("sda", "8:0", map[string]string{"sda3": "8:3"}), {name: "dm-0", dev: "253:0", sectors: 1 << 20, slaves: []string{"sda3"}}},
			mountinfo: mi("253:0", "/", "ext4", "/dev/mapper/vg-root"), target: "sda", allowFixed: true, want: "holds the running system (/)"},
		{name: "root's lvm volume named", disks: []fakeDisk{sata("sda", "8:0", map[string]string{"sda3": "8:3"}), {name: "dm-0", dev: "253:0", sectors: 1 << 20, slaves: []string{"sda3"}}},
			mountinfo: mi("253:0", "/", "ext4", "/dev/mapper/vg-root"), target: "dm-0", allowFixed: true, want: "/dev/dm-0 (512.0 MiB) holds the running system (/)"},
		{name: "root's raid named", disks: []fakeDisk{sata("sda", "8:0", map[string]string{"sda1": "8:1"}), sata("sdb", "8:16", map[string]string{"sdb1": "8:17"}), {name: "md0", dev: "9:0", sectors: 1 << 20, slaves: []string{"sda1", "sdb1"}}},
			mountinfo: mi("9:0", "/", "ext4", "/dev/md0"), target: "md0", allowFixed: true, want: "/dev/md0 (512.0 MiB) holds the running system (/)"},
		{name: "lvm over crypt named", disks: []fakeDisk{sata("sda", "8:0", map[string]string{"sda3": "8:3"}), {name: "dm-0", dev: "253:0", sectors: 1 << 20, slaves: []string{"sda3"}}, {name: "dm-1", dev: "253:1", sectors: 1 << 20, slaves: []string{"dm-0"}}},
			mountinfo: mi("253:1", "/", "ext4", "/dev/mapper/vg-root"), target: "dm-0", allowFixed: true, want: "holds the running system (/)"},
		{name: "raid member disk", disks: []fakeDisk{sata("sda", "8:0", map[string]string{"sda1": "8:1"}), sata("sdb", "8:16", map[string]string{"sdb1": "8:17"}), {name: "md0", dev: "9:0", sectors: 1 << 20, slaves: []string{"sda1", "sdb1"}}},
			mountinfo: mi("9:0", "/", "ext4", "/dev/md0"), target: "sdb", allowFixed: true, want: "holds the running system (/)"},
		{name: "btrfs root", disks: []fakeDisk{{name: "nvme0n1", dev: "259:0", sectors: 1 << 30, parts: map[string]string{"nvme0n1p2": "259:2"}}},
			mountinfo: mi("0:31", "/", "btrfs", "/dev/nvme0n1p2"), target: "nvme0n1", allowFixed: true, want: "holds the running system (/)"},
		{name: "pi sd card", disks: []fakeDisk{{name: "mmcblk0", dev: "179:0", sectors: 1 << 25, removable: true, parts: map[string]string{"mmcblk0p1": "179:1", "mmcblk0p2": "179:2"}}},
			mountinfo: mi("179:2", "/", "ext4", "/dev/mmcblk0p2") + mi("179:1", "/boot/firmware", "vfat", "/dev/mmcblk0p1"), target: "mmcblk0",
			want: "holds the running system (/, /boot/firmware)"},
		{name: "mounted partition", disks: []fakeDisk{stick}, mountinfo: rootOnSDA + mi("8:17", "/media/ops/bootfs", "vfat", "/dev/sdb1"), target: "sdb",
			want: "sdb1 is mounted on /media/ops/bootfs"},
		{name: "swap", disks: []fakeDisk{stick}, mountinfo: rootOnSDA, swaps: "/dev/sdb1\tpartition\t1024\t0\t-2\n", target: "sdb", want: "/dev/sdb1 is in use as swap"},
		{name: "held", disks: []fakeDisk{{name: "sdb", dev: "8:16", sectors: 1 << 24, usb: true, parts: map[string]string{"sdb1": "8:17"}, holders: map[string]string{"sdb1": "md0"}}},
			mountinfo: rootOnSDA, target: "sdb", want: "sdb1 is held by md0"},
		{name: "fixed disk", disks: []fakeDisk{sata("sdc", "8:32", nil)}, mountinfo: rootOnSDA, target: "sdc", want: "is a fixed ata disk, not a removable or USB one; if you really mean it, name it with --allow-fixed"},
		{name: "fixed disk allowed", disks: []fakeDisk{sata("sdc", "8:32", nil)}, mountinfo: rootOnSDA, target: "sdc", allowFixed: true},
		{name: "too small", disks: []fakeDisk{stick}, mountinfo: rootOnSDA, target: "sdb", size: 16 << 30, want: "holds 8.00 GiB, less than the image's 16.00 GiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fakeSystem(t, tt.disks, tt.mountinfo, tt.swaps)
			var dev string
			for _, d := range tt.disks {
				if d.name == tt.target {
					dev = d.dev
				}
			}
			d, err := s.Describe("/dev/"+tt.target, dev)
			if err != nil {
				t.Fatal(err)
			}
			size := tt.size
			if size == 0 {
				size = image
			}
			err = d.Refusal(size, tt.allowFixed)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Refusal(%s) = %v; want none", tt.target, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Refusal(%s) = %v; want %q", tt.target, err, tt.want)
			}
		})
	}
}

// TestDescribe checks what the prompt shows about a disk, and that a
// partition is refused in favour of its disk.
func TestDescribe(t *testing.T) {
	stick := fakeDisk{name: "sdb", dev: "8:16", sectors: 1 << 24, usb: true, parts: map[string]string{"sdb1": "8:17"},
		udev: "E:ID_MODEL=Extreme_Pro\nE:ID_SERIAL_SHORT=AA01234\nE:ID_BUS=usb\n"}
	s := fakeSystem(t, []fakeDisk{stick}, mi("8:2", "/", "ext4", "/dev/sda2"), "")
	d, err := s.Describe("/dev/sdb", "8:16")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.String(), "Extreme Pro, serial AA01234, 8.00 GiB"; got != want || !d.Removable || d.Transport != "usb" || len(d.Partitions) != 1 || d.Partitions[0].Name != "sdb1" {
		t.Errorf("Describe(sdb) = %q %+v; want %q, removable usb, one partition sdb1", got, d, want)
	}
	_, err = s.Describe("/dev/sdb1", "8:17")
	if err == nil || !strings.Contains(err.Error(), "name the whole disk (/dev/sdb)") {
		t.Errorf("Describe(sdb1) = %v; want a refusal naming the whole disk", err)
	}
	_, err = s.Describe("/dev/sdx", "8:99")
	if err == nil || !strings.Contains(err.Error(), "no block device 8:99") {
		t.Errorf("Describe(8:99) = %v", err)
	}
}

// TestSwappedDisk: the disk opened for writing is described again and
// must be the one inspected and confirmed (same device number, model,
// serial, size), and still pass the refusals.
func TestSwappedDisk(t *testing.T) {
	stick := fakeDisk{name: "sdb", dev: "8:16", sectors: 1 << 24, usb: true, parts: map[string]string{"sdb1": "8:17"},
		udev: "E:ID_MODEL=Extreme_Pro\nE:ID_SERIAL_SHORT=AA01234\nE:ID_BUS=usb\n"}
	const image = 32 << 20
	rootOnSDA := mi("8:2", "/", "ext4", "/dev/sda2")
	tests := []struct {
		name   string
		dev    string // as the open file says
		change func(s System)
		want   string
	}{
		{name: "same", dev: "8:16", change: func(System) {}},
		{name: "other number", dev: "8:32", change: func(System) {}, want: "not the one confirmed: it is device 8:32 now, not 8:16; nothing written"},
		{name: "other serial", dev: "8:16", change: func(s System) {
			writeFile(t, s, "/run/udev/data/b8:16", "E:ID_MODEL=Extreme_Pro\nE:ID_SERIAL_SHORT=ZZ99999\nE:ID_BUS=usb\n")
		}, want: "the device at /dev/sdb is not the one confirmed: it is Extreme Pro, serial ZZ99999, 8.00 GiB now, not Extreme Pro, serial AA01234, 8.00 GiB; nothing written"},
		{name: "other size", dev: "8:16", change: func(s System) {
			writeFile(t, s, "/sys/dev/block/8:16/size", "1048576")
		}, want: "not the one confirmed: it is Extreme Pro, serial AA01234, 512.0 MiB now"},
		{name: "mounted since", dev: "8:16", change: func(s System) {
			writeFile(t, s, "/proc/self/mountinfo", rootOnSDA+mi("8:17", "/media/ops/bootfs", "vfat", "/dev/sdb1"))
		}, want: "sdb1 is mounted on /media/ops/bootfs; unmount it (and stop what holds it) first; nothing written"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fakeSystem(t, []fakeDisk{stick}, rootOnSDA, "")
			d, err := s.Describe("/dev/sdb", "8:16")
			if err != nil {
				t.Fatal(err)
			}
			tg := Target{Path: "/dev/sdb", Disk: d, sys: s}
			tt.change(s)
			err = tg.sameDisk(tt.dev, image)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("sameDisk = %v; want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("sameDisk = %v; want %q", err, tt.want)
			}
		})
	}
}

// writeFile replaces a file of the fake system s.
func writeFile(t *testing.T, s System, p, data string) {
	t.Helper()
	if err := os.WriteFile(s.path(p), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
