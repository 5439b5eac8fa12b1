package firstboot

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/firstboot/status"
)

// The first boot's bootloader stage (templates/bootfacts.sh) against fake
// boards: device-tree files, sysfs and the stand-ins for rpi-eeprom-config
// and vcgencmd in testdata/standins, written from the real tools' sources.

// rootDevice is where a root file system lives, as the kernel shows it:
// the major:minor in /proc/self/mountinfo and /sys/dev/block's link to the
// device (Documentation/ABI/stable/sysfs-dev; mountinfo's fields are in
// Documentation/filesystems/proc.rst), laid out as on the real boards.
type rootDevice struct {
	dev, link, mountSource string
	// usb: the disk's USB device directory (relative to /sys/devices),
	// its IDs and the driver bound to its interface.
	usbDir, vid, pid, driver string
}

var (
	sdRoot = rootDevice{dev: "179:2", mountSource: "/dev/mmcblk0p2",
		link: "../../devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0/mmcblk0p2"}
	nvmeRoot = rootDevice{dev: "259:2", mountSource: "/dev/nvme0n1p2",
		link: "../../devices/platform/axi/1000110000.pcie/pci0001:00/0001:00:00.0/0001:01:00.0/nvme/nvme0/nvme0n1/nvme0n1p2"}
	// A Pi 4's USB 3 port is on the VL805 controller behind PCIe; the
	// JMicron JMS578 bridge (152d:0578) bound to usb-storage, as the
	// quirk 152d:0578:u makes it.
	usbRoot = rootDevice{dev: "8:2", mountSource: "/dev/sda2",
		link:   "../../devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb2/2-2/2-2:1.0/host0/target0:0:0/0:0:0:0/block/sda/sda2",
		usbDir: "platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb2/2-2", vid: "152d", pid: "0578", driver: "usb-storage"}
)

// rootOn puts the fake root's root file system on d.
func (n *fakeNode) rootOn(t *testing.T, d rootDevice) {
	t.Helper()
	n.write(t, "proc/self/mountinfo", "1 0 0:21 / /run rw - tmpfs tmpfs rw\n23 1 "+d.dev+" / / rw,noatime shared:1 - ext4 "+d.mountSource+" rw\n")
	link := filepath.Join(n.root, "sys", "dev", "block", d.dev)
	os.Remove(link)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(d.link, link); err != nil {
		t.Fatal(err)
	}
	if d.usbDir == "" {
		return
	}
	dir := "sys/devices/" + d.usbDir
	n.write(t, dir+"/idVendor", d.vid+"\n")
	n.write(t, dir+"/idProduct", d.pid+"\n")
	iface := filepath.Join(n.root, dir, "2-2:1.0")
	if err := os.MkdirAll(iface, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../../../../bus/usb/drivers/"+d.driver, filepath.Join(iface, "driver")); err != nil {
		t.Fatal(err)
	}
}

// board is a Raspberry Pi as the stand-ins and the first boot see it:
// its device tree (compatible, model, the revision code that
// rpi-eeprom-update decodes, the bootloader's build timestamp) and whether
// it has the VideoCore mailbox (/dev/vcio).
type board struct {
	compatible, model string
	revision          uint32
	buildTimestamp    uint32 // 0: not in the device tree
	vcio              bool
}

var (
	pi4   = board{compatible: "raspberrypi,4-model-b\x00brcm,bcm2711\x00", model: "Raspberry Pi 4 Model B Rev 1.5\x00", revision: 0xc03115, buildTimestamp: 1779045198, vcio: true}
	pi5   = board{compatible: "raspberrypi,5-model-b\x00brcm,bcm2712\x00", model: "Raspberry Pi 5 Model B Rev 1.0\x00", revision: 0xc04170, vcio: true}
	cm4   = board{compatible: "raspberrypi,4-compute-module\x00brcm,bcm2711\x00", model: "Raspberry Pi Compute Module 4 Rev 1.1\x00", revision: 0xb03140, vcio: true}
	pi3   = board{compatible: "raspberrypi,3-model-b\x00brcm,bcm2837\x00", model: "Raspberry Pi 3 Model B Rev 1.2\x00", revision: 0xa02082, vcio: true}
	qemu  = board{compatible: "linux,dummy-virt\x00"}
	noDev = board{}
)

// on makes the fake node board b, with the stand-ins on PATH (tools) or not.
func (n *fakeNode) on(t *testing.T, b board, tools bool) {
	t.Helper()
	if err := os.Symlink("../sys/firmware/devicetree/base", filepath.Join(n.root, "proc", "device-tree")); err != nil {
		t.Fatal(err)
	}
	if b != noDev {
		dt := "sys/firmware/devicetree/base/"
		n.write(t, dt+"compatible", b.compatible)
		n.write(t, dt+"model", b.model)
		if b.revision != 0 {
			n.write(t, dt+"system/linux,revision", string(binary.BigEndian.AppendUint32(nil, b.revision)))
		}
		if b.buildTimestamp != 0 {
			n.write(t, dt+"chosen/bootloader/build-timestamp", string(binary.BigEndian.AppendUint32(nil, b.buildTimestamp)))
		}
	}
	if b.vcio {
		n.write(t, "dev/vcio", "")
	}
	if !tools {
		return
	}
	for _, name := range []string{"rpi-eeprom-config", "vcgencmd", "board.sh"} {
		data, err := os.ReadFile(filepath.Join("testdata", "standins", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.stubDir, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// eeprom sets the configuration the board's bootloader runs with.
func (n *fakeNode) eeprom(t *testing.T, config string) {
	t.Helper()
	n.write(t, "../stubs/eeprom/bootconf.txt", config)
}

// pending is the configuration rpi-eeprom-config --apply left for the
// next boot, or "".
func (n *fakeNode) pending() string {
	b, _ := os.ReadFile(filepath.Join(n.stubDir, "eeprom", "pending"))
	return string(b)
}

const profileRecipe = `
cluster {
  token = "golden-token-0123456789abcdef"
}
node "nvme" {
  role = "server"
  ip   = "192.168.1.20/24"
  hardware {
    model       = "pi5"
    boot_device = "nvme"
    bootloader {
      boot_order = "nvme,usb,sd"
      apply      = true
    }
  }
}
node "usb" {
  role = "agent"
  hardware {
    model              = "pi4"
    boot_device        = "usb"
    usb_storage_quirks = ["152d:0578"]
  }
}
node "cm" {
  role = "agent"
  hardware {
    model       = "cm4"
    boot_device = "nvme"
    bootloader {
      boot_order = "nvme,sd"
      apply      = true
    }
  }
}
node "plain" {
  role = "agent"
}
`

// TestBootFacts: the facts a first boot records, in the bootloader
// stage's record and every one after it.
func TestBootFacts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		node  string
		board board
		tools bool
		root  rootDevice
		eep   string // the EEPROM's configuration; "" the board's default
		want  status.Facts
		stage string // the bootloader stage's state, and a part of its reason
		why   string
	}{
		{name: "pi4 from usb with the quirk, default eeprom", node: "usb", board: pi4, tools: true, root: usbRoot,
			want:  status.Facts{Model: "Raspberry Pi 4 Model B Rev 1.5", Root: "sda2", Transport: "usb", USBID: "152d:0578", USBDriver: "usb-storage", MemoryCgroup: true, BootOrder: "0xf41", BootOrderDefault: true, BootloaderVersion: "2026/05/17 19:13:18 (timestamp 1779045198)", BootloaderSource: "rpi-eeprom-config"},
			stage: status.StateOK, why: "BOOT_ORDER 0xf41 boots usb"},
		{name: "pi4 from usb, a 2019 eeprom that boots only the sd card", node: "usb", board: pi4, tools: true, root: usbRoot, eep: "[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nBOOT_ORDER=0x1\n",
			want:  status.Facts{Model: "Raspberry Pi 4 Model B Rev 1.5", Root: "sda2", Transport: "usb", USBID: "152d:0578", USBDriver: "usb-storage", MemoryCgroup: true, BootOrder: "0x1", BootloaderVersion: "2026/05/17 19:13:18 (timestamp 1779045198)", BootloaderSource: "rpi-eeprom-config"},
			stage: status.StateFailed, why: "BOOT_ORDER 0x1 never tries usb (mode 4): once the SD card is gone the node will not boot"},
		{name: "pi4 from usb, boot order in a gpio section only", node: "usb", board: pi4, tools: true, root: usbRoot, eep: "[all]\nBOOT_ORDER=0xf21\n[gpio4=0]\nBOOT_ORDER=0xf41\n[config.txt]\nBOOT_ORDER=0xf4\n",
			want:  status.Facts{Model: "Raspberry Pi 4 Model B Rev 1.5", Root: "sda2", Transport: "usb", USBID: "152d:0578", USBDriver: "usb-storage", MemoryCgroup: true, BootOrder: "0xf21", BootloaderVersion: "2026/05/17 19:13:18 (timestamp 1779045198)", BootloaderSource: "rpi-eeprom-config"},
			stage: status.StateFailed, why: "BOOT_ORDER 0xf21 never tries usb"},
		{name: "pi5 from nvme, order already set", node: "nvme", board: pi5, tools: true, root: nvmeRoot, eep: "[all]\nBOOT_UART=1\nBOOT_ORDER=0xf146\nPCIE_PROBE=1\n",
			want:  status.Facts{Model: "Raspberry Pi 5 Model B Rev 1.0", Root: "nvme0n1p2", Transport: "nvme", MemoryCgroup: true, BootOrder: "0xf146", BootloaderVersion: "2026/05/26 15:01:25 (timestamp 1779807685)", BootloaderSource: "rpi-eeprom-config"},
			stage: status.StateOK, why: "root on nvme (nvme0n1p2); BOOT_ORDER is 0xf146 already; nothing to apply"},
		{name: "plain node on an sd card, a pi5 without the tools", node: "plain", board: pi5, root: sdRoot,
			want:  status.Facts{Model: "Raspberry Pi 5 Model B Rev 1.0", Root: "mmcblk0p2", Transport: "mmc", MemoryCgroup: true, BootloaderProblem: "neither rpi-eeprom-config nor vcgencmd is installed (packages rpi-eeprom, raspi-utils)"},
			stage: status.StateOK, why: "root on mmc (mmcblk0p2); bootloader not read"},
		{name: "usb node on qemu: no eeprom tools", node: "usb", board: qemu, root: usbRoot,
			want:  status.Facts{Root: "sda2", Transport: "usb", USBID: "152d:0578", USBDriver: "usb-storage", MemoryCgroup: true, BootloaderProblem: "neither rpi-eeprom-config nor vcgencmd is installed (packages rpi-eeprom, raspi-utils)"},
			stage: status.StateWaiting, why: "bootloader not read, BOOT_ORDER unchecked"},
		{name: "tools on a machine without the mailbox", node: "usb", board: qemu, tools: true, root: usbRoot,
			want:  status.Facts{Root: "sda2", Transport: "usb", USBID: "152d:0578", USBDriver: "usb-storage", MemoryCgroup: true, BootloaderSource: "rpi-eeprom-config", BootloaderProblem: "rpi-eeprom-config failed: ERROR: vcgencmd bootloader_config failed: 255 Can't open device file: /dev/vcio_gencmd"},
			stage: status.StateWaiting, why: "BOOT_ORDER unchecked: rpi-eeprom-config failed"},
		{name: "tools on a pi3, which has no eeprom", node: "plain", board: pi3, tools: true, root: sdRoot,
			want:  status.Facts{Model: "Raspberry Pi 3 Model B Rev 1.2", Root: "mmcblk0p2", Transport: "mmc", MemoryCgroup: true, BootloaderSource: "rpi-eeprom-config", BootloaderProblem: `rpi-eeprom-config failed: ERROR: vcgencmd bootloader_config failed: 2 vc_gencmd_read_response returned 2 error=2 error_msg="Invalid arguments"`},
			stage: status.StateOK, why: "bootloader not read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newFakeNode(t, renderFor(t, profileRecipe, tt.node, Options{BuildID: "b1"}))
			n.rootOn(t, tt.root)
			n.on(t, tt.board, tt.tools)
			if tt.eep != "" {
				n.eeprom(t, tt.eep)
			}
			n.activate(t)
			if code := n.firstboot(t); code != 0 {
				t.Fatalf("firstboot exited %d:\n%s", code, n.read(t, "var/log/pibake/firstboot.log"))
			}
			var stage *status.Record
			for _, s := range status.ParseLog([]byte(n.read(t, "var/lib/pibake/status.log"))) {
				if s.Stage == status.StageBootloader {
					stage = &s
				}
				if s.Stage == status.StageActivate && s.Facts != nil {
					t.Errorf("the activation's record has facts: %+v", s.Facts)
				}
			}
			if stage == nil || stage.State != tt.stage || !strings.Contains(stage.Reason, tt.why) {
				t.Fatalf("bootloader record = %+v; want %s with %q", stage, tt.stage, tt.why)
			}
			if stage.Facts == nil || *stage.Facts != tt.want {
				t.Errorf("facts = %+v\nwant    %+v", stage.Facts, tt.want)
			}
			if last := n.status(t); last.Stage != status.StageDone || last.Facts == nil || *last.Facts != tt.want {
				t.Errorf("last record = %+v with facts %+v; want done with the same facts", last, last.Facts)
			}
			if tt.stage == status.StateFailed && !strings.Contains(n.status(t).Reason, "with problems: bootloader") {
				t.Errorf("final record %q does not list the bootloader problem", n.status(t).Reason)
			}
			mustNotContain(t, "firstboot.log", n.read(t, "var/log/pibake/firstboot.log"), "rpi-eeprom-config --apply /")
		})
	}
}

// TestBootOrderApply stages the recipe's BOOT_ORDER with the OS's
// rpi-eeprom-config --apply, once, keeping the rest of the configuration;
// and records each way it fails without stopping the first boot.
func TestBootOrderApply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		node  string
		board board
		tools bool
		env   []string
		eep   string
		// pending is the configuration applied for the next boot ("" none).
		pending string
		stage   string
		why     string
	}{
		{name: "pi5 nvme: order and PCIE_PROBE, the rest kept", node: "nvme", board: pi5, tools: true,
			pending: "PCIE_PROBE=1\n[all]\nBOOT_UART=1\nBOOT_ORDER=0xf146\nNET_INSTALL_AT_POWER_ON=1\n",
			stage:   status.StateOK, why: "BOOT_ORDER 0xf146 staged with rpi-eeprom-config --apply (it was 0xf461); the bootloader uses it from the next reboot"},
		{name: "no order set yet: added for every boot, before a config.txt section", node: "nvme", board: pi5, tools: true,
			eep:     "BOOT_UART=1\n[gpio8=0]\nBOOT_ORDER=0xf1\n[config.txt]\nBOOT_ORDER=0x0\n",
			pending: "PCIE_PROBE=1\nBOOT_ORDER=0xf146\nBOOT_UART=1\n[gpio8=0]\nBOOT_ORDER=0xf1\n[config.txt]\nBOOT_ORDER=0x0\n",
			stage:   status.StateOK, why: "BOOT_ORDER 0xf146 staged"},
		{name: "already set", node: "nvme", board: pi5, tools: true, eep: "[all]\nBOOT_ORDER=0xf146\nPCIE_PROBE=1\n",
			stage: status.StateOK, why: "BOOT_ORDER is 0xf146 already; nothing to apply"},
		{name: "cm4: rpi-eeprom-update is off", node: "cm", board: cm4, tools: true,
			stage: status.StateFailed, why: "rpi-eeprom-config --apply failed, BOOT_ORDER stays 0xf41: ERROR: EEPROM image 'rpi-eeprom-update is not enabled by default on CM4(S)."},
		{name: "read-only boot partition", node: "nvme", board: pi5, tools: true, env: []string{"STANDIN_BOOTFS_RO=1"},
			stage: status.StateFailed, why: "rpi-eeprom-config --apply failed, BOOT_ORDER stays 0xf461: ERROR: rpi-eeprom-update -d -i -f /tmp/tmpstandin/pieeprom.upd failed: 2"},
		{name: "not root", node: "nvme", board: pi5, tools: true, env: []string{"STANDIN_UID=1000"},
			stage: status.StateFailed, why: "ERROR: --edit/--apply must be run as root"},
		{name: "no eeprom tools", node: "nvme", board: pi5,
			stage: status.StateFailed, why: "BOOT_ORDER 0xf146 not applied: the bootloader's configuration could not be read: neither rpi-eeprom-config nor vcgencmd is installed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newFakeNode(t, renderFor(t, profileRecipe, tt.node, Options{BuildID: "b1"}))
			n.rootOn(t, sdRoot) // booted once from SD, to move to the SSD
			n.on(t, tt.board, tt.tools)
			if tt.eep != "" {
				n.eeprom(t, tt.eep)
			}
			n.activate(t)
			// The install script cannot be fetched: systemd runs the first
			// boot again, and the apply must not repeat.
			env := append([]string{"CURL_DOWNLOAD_FAILS=5"}, tt.env...)
			if code := n.firstboot(t, env...); code != 1 {
				t.Fatalf("firstboot exited %d; want 1 (download failed, retried):\n%s", code, n.read(t, "var/log/pibake/firstboot.log"))
			}
			if code := n.firstboot(t, tt.env...); code != 0 {
				t.Fatalf("firstboot exited %d:\n%s", code, n.read(t, "var/log/pibake/firstboot.log"))
			}
			if got := n.pending(); got != tt.pending {
				t.Errorf("configuration applied = %q; want %q", got, tt.pending)
			}
			log := n.read(t, "var/log/pibake/firstboot.log")
			if runs := strings.Count(log, "firstboot: rpi-eeprom-config --apply /"); runs > 1 {
				t.Errorf("rpi-eeprom-config --apply ran %d times; want at most once", runs)
			}
			var stage []status.Record
			for _, s := range status.ParseLog([]byte(n.read(t, "var/lib/pibake/status.log"))) {
				if s.Stage == status.StageBootloader {
					stage = append(stage, s)
				}
			}
			if len(stage) != 1 || stage[0].State != tt.stage || !strings.Contains(stage[0].Reason, tt.why) {
				t.Fatalf("bootloader records = %+v; want one, %s with %q", stage, tt.stage, tt.why)
			}
			facts := n.status(t).Facts
			staged := ""
			if tt.pending != "" {
				staged = "0xf146"
			}
			if facts == nil || facts.BootOrderStaged != staged || facts.Transport != "mmc" {
				t.Errorf("facts = %+v; want staged %q, root on mmc", facts, staged)
			}
			if n.exists("var/lib/pibake/firstboot.done") != true {
				t.Error("the first boot did not finish")
			}
			mustContain(t, "commands", n.commands(t), "install.sh EXEC=")
		})
	}
}

// TestQuirkSurvivesActivation: the usb-storage quirk is on cmdline.txt
// for good; the activator removes only its own arguments.
func TestQuirkSurvivesActivation(t *testing.T) {
	t.Parallel()
	for _, base := range []Base{{}, {CloudInit: true, SystemdFirstBoot: true}} {
		p := renderFor(t, profileRecipe, "usb", Options{BuildID: "b1", Base: base})
		n := newFakeNode(t, p)
		n.activate(t, "PIBAKE_METHOD="+string(p.Method))
		cmdline := n.read(t, "boot/firmware/cmdline.txt")
		want := originalCmdline + " cgroup_memory=1 cgroup_enable=memory usb-storage.quirks=152d:0578:u"
		if p.Method == "cloud-init" {
			want += " ds=nocloud;i=" + instanceIDFor(t, p)
		}
		if cmdline != want+"\n" {
			t.Errorf("%s: cmdline.txt after activation = %q; want %q", p.Method, cmdline, want+"\n")
		}
	}
}

// instanceIDFor is the ds=nocloud argument's instance id in p.
func instanceIDFor(t *testing.T, p Payload) string {
	t.Helper()
	for _, a := range p.CmdlineAdd {
		if id, ok := strings.CutPrefix(a, "ds=nocloud;i="); ok {
			return id
		}
	}
	t.Fatal("no ds=nocloud argument")
	return ""
}

// TestStandinsShellcheck: the stand-ins are POSIX sh that shellcheck
// accepts, like the scripts they stand beside.
func TestStandinsShellcheck(t *testing.T) {
	t.Parallel()
	shellcheck := requireTool(t, "shellcheck")
	cmd := exec.Command(shellcheck, "-x", "-s", "sh", "-S", "style", "rpi-eeprom-config", "vcgencmd", "board.sh")
	cmd.Dir = filepath.Join("testdata", "standins")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// TestFactsLines: the facts as inspect (and watch) show them.
func TestFactsLines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		f          status.Facts
		boot, load string
	}{
		{f: status.Facts{Root: "sda2", Transport: "usb", USBID: "152d:0578", USBDriver: "usb-storage", MemoryCgroup: true, BootOrder: "0xf41", BootOrderDefault: true, BootloaderVersion: "2026/05/17 19:13:18 (timestamp 1779045198)", BootloaderSource: "vcgencmd bootloader_config"},
			boot: "root sda2 on usb (152d:0578, usb-storage); memory cgroup present",
			load: "BOOT_ORDER 0xf41 (not set: the default); version 2026/05/17 19:13:18 (timestamp 1779045198); read with vcgencmd bootloader_config"},
		{f: status.Facts{Transport: "unknown", BootloaderProblem: "neither rpi-eeprom-config nor vcgencmd is installed"},
			boot: "root (device unknown) on unknown; memory cgroup MISSING (k3s cannot run)",
			load: "not read: neither rpi-eeprom-config nor vcgencmd is installed"},
		{f: status.Facts{Model: "Raspberry Pi 5 Model B Rev 1.0", Root: "nvme0n1p2", Transport: "nvme", MemoryCgroup: true, BootOrder: "0xf461", BootOrderStaged: "0xf146", BootloaderSource: "rpi-eeprom-config"},
			boot: "root nvme0n1p2 on nvme; memory cgroup present; Raspberry Pi 5 Model B Rev 1.0",
			load: "BOOT_ORDER 0xf461; read with rpi-eeprom-config; BOOT_ORDER 0xf146 staged for the next reboot"},
	}
	for _, tt := range tests {
		if got := tt.f.BootLine(); got != tt.boot {
			t.Errorf("BootLine() = %q; want %q", got, tt.boot)
		}
		if got := tt.f.BootloaderLine(); got != tt.load {
			t.Errorf("BootloaderLine() = %q; want %q", got, tt.load)
		}
	}
}
