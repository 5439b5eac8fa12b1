package recipes

import (
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// subject is a finding's Subject.String() with the temporary directory
// cut off: "recipe.hcl:4,12-18".
func subject(d *hcl.Diagnostic) string {
	if d.Subject == nil {
		return "-"
	}
	r := *d.Subject
	r.Filename = filepath.Base(r.Filename)
	return r.String()
}

// hwNode is a node block with a hardware block holding body, then a
// founding server, so that positions in body are those of the tests.
func hwNode(role, body string) string {
	return "node \"n\" {\n  role = \"" + role + "\"\n  server = \"192.168.1.10\"\n  hardware {\n" + body + "  }\n}\n" + server
}

// TestHardwareFindings: every refusal of a hardware profile, and its
// warnings, with Summary and Subject (STYLE.md C11).
func TestHardwareFindings(t *testing.T) {
	tests := []struct {
		name     string
		src      string
		severity hcl.DiagnosticSeverity
		summary  string
		subject  string
	}{
		{name: "unknown model", src: hwNode("agent", "    model = \"pi3\"\n"), summary: "Invalid hardware model", subject: "recipe.hcl:5,13-18"},
		{name: "unknown boot device", src: hwNode("agent", "    boot_device = \"emmc\"\n"), summary: "Invalid boot device", subject: "recipe.hcl:5,19-25"},
		{name: "nvme on a pi4", src: hwNode("agent", "    model = \"pi4\"\n    boot_device = \"nvme\"\n"), summary: "NVMe on a model without PCIe", subject: "recipe.hcl:6,19-25"},
		{name: "nvme on a pi400", src: hwNode("agent", "    model = \"pi400\"\n    boot_device = \"nvme\"\n"), summary: "NVMe on a model without PCIe", subject: "recipe.hcl:6,19-25"},
		{name: "nvme on a pi500", src: hwNode("agent", "    model = \"pi500\"\n    boot_device = \"nvme\"\n"), summary: "NVMe on a model without PCIe", subject: "recipe.hcl:6,19-25"},
		{name: "nvme without a model", src: hwNode("agent", "    boot_device = \"nvme\"\n"), summary: "NVMe on a model without PCIe", subject: "recipe.hcl:5,19-25"},
		{name: "pcie gen 4", src: hwNode("agent", "    model = \"pi5\"\n    pcie_gen = 4\n"), summary: "Invalid PCIe generation", subject: "recipe.hcl:6,16-17"},
		{name: "pcie gen on a cm4", src: hwNode("agent", "    model = \"cm4\"\n    pcie_gen = 2\n"), summary: "PCIe speed on a model without pciex1", subject: "recipe.hcl:6,16-17"},
		{name: "pcie gen without a model", src: hwNode("agent", "    pcie_gen = 2\n"), summary: "PCIe speed on a model without pciex1", subject: "recipe.hcl:5,16-17"},
		{name: "pcie gen 3 warns", severity: hcl.DiagWarning, src: hwNode("agent", "    model = \"pi5\"\n    pcie_gen = 3\n"), summary: "PCIe Gen 3 is not certified", subject: "recipe.hcl:6,16-17"},
		{name: "usb current on a pi4", src: hwNode("agent", "    model = \"pi4\"\n    usb_max_current = true\n"), summary: "USB current setting on a model without it", subject: "recipe.hcl:6,23-27"},
		{name: "quirk not hex", src: hwNode("agent", "    usb_storage_quirks = [\"152d:0578\", \"152g:0578\"]\n"), summary: "Invalid USB storage quirk", subject: "recipe.hcl:5,40-51"},
		{name: "quirk with a dash", src: hwNode("agent", "    usb_storage_quirks = [\"152d-0578\"]\n"), summary: "Invalid USB storage quirk", subject: "recipe.hcl:5,27-38"},
		{name: "quirk flag the kernel lacks", src: hwNode("agent", "    usb_storage_quirks = [\"152d:0578:x\"]\n"), summary: "Invalid USB storage quirk", subject: "recipe.hcl:5,27-40"},
		{name: "quirk twice", src: hwNode("agent", "    usb_storage_quirks = [\"152d:0578\", \"152D:0578:u\"]\n"), summary: "Duplicate USB storage quirk", subject: "recipe.hcl:5,40-53"},
		{name: "config.txt kernel", src: hwNode("agent", "    config_txt = [\"dtparam=audio=off\", \"kernel=vmlinuz\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,40-56"},
		{name: "config.txt os_prefix", src: hwNode("agent", "    config_txt = [\"os_prefix=next/\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-36"},
		{name: "config.txt upstream_kernel", src: hwNode("agent", "    config_txt = [\"upstream_kernel=1\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-38"},
		{name: "config.txt cmdline", src: hwNode("agent", "    config_txt = [\"cmdline=other.txt\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-38"},
		{name: "config.txt initramfs", src: hwNode("agent", "    config_txt = [\"initramfs initrd.img followkernel\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-54"},
		{name: "config.txt auto_initramfs", src: hwNode("agent", "    config_txt = [\"auto_initramfs=0\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-37"},
		{name: "config.txt arm_64bit=0", src: hwNode("agent", "    config_txt = [\"arm_64bit=0\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-32"},
		{name: "config.txt device_tree", src: hwNode("agent", "    config_txt = [\"device_tree=\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-33"},
		{name: "config.txt start_file", src: hwNode("agent", "    config_txt = [\"start_file=start4x.elf\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-43"},
		{name: "config.txt include", src: hwNode("agent", "    config_txt = [\"include extra.txt\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-38"},
		{name: "config.txt filter", src: hwNode("agent", "    config_txt = [\"[pi4]\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-26"},
		{name: "config.txt two lines in one", src: hwNode("agent", "    config_txt = [\"dtparam=audio=off\\narm_64bit=0\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-51"},
		{name: "config.txt over 98 characters", src: hwNode("agent", "    config_txt = [\"dtoverlay="+strings.Repeat("x", 89)+"\"]\n"), summary: "config.txt line refused", subject: "recipe.hcl:5,19-120"},
		{name: "config.txt refused in defaults", src: "defaults {\n  hardware {\n    config_txt = [\"kernel=x.img\"]\n  }\n}\n" + server, summary: "config.txt line refused", subject: "recipe.hcl:3,19-33"},
		{name: "storage sd with an nvme boot device", src: "node \"n\" {\n  role = \"agent\"\n  server = \"192.168.1.10\"\n  storage = \"sd\"\n  hardware {\n    model = \"pi5\"\n    boot_device = \"nvme\"\n  }\n}\n" + server, summary: "Storage and boot device disagree", subject: "recipe.hcl:7,19-25"},
		{name: "server booting from sd warns", severity: hcl.DiagWarning, src: hwNode("server", "    boot_device = \"sd\"\n"), summary: "Server on an SD card", subject: "recipe.hcl:5,19-23"},
		{name: "boot order with an unknown mode", src: hwNode("agent", "    bootloader {\n      boot_order = \"nvme,floppy\"\n    }\n"), summary: "Invalid boot order", subject: "recipe.hcl:6,20-33"},
		{name: "boot order names a mode twice", src: hwNode("agent", "    bootloader {\n      boot_order = \"usb,sd,usb\"\n    }\n"), summary: "Invalid boot order", subject: "recipe.hcl:6,20-32"},
		{name: "boot order goes on after stop", src: hwNode("agent", "    bootloader {\n      boot_order = \"sd,stop,usb\"\n    }\n"), summary: "Invalid boot order", subject: "recipe.hcl:6,20-33"},
		{name: "boot order goes on after rpiboot", src: hwNode("agent", "    bootloader {\n      boot_order = \"rpiboot,sd\"\n    }\n"), summary: "Invalid boot order", subject: "recipe.hcl:6,20-32"},
		{name: "boot order skips the boot device", src: hwNode("agent", "    model = \"pi4\"\n    boot_device = \"usb\"\n    bootloader {\n      boot_order = \"sd,network\"\n      apply = true\n    }\n"), summary: "Boot order skips the boot device", subject: "recipe.hcl:8,20-32"},
		{name: "boot order with nvme on a pi4", src: hwNode("agent", "    model = \"pi4\"\n    bootloader {\n      boot_order = \"nvme,usb,sd\"\n    }\n"), summary: "NVMe on a model without PCIe", subject: "recipe.hcl:7,20-33"},
		{name: "apply without an order", src: hwNode("agent", "    bootloader {\n      apply = true\n    }\n"), summary: "Nothing to apply", subject: "recipe.hcl:6,15-19"},
		{name: "apply on a cm4 warns", severity: hcl.DiagWarning, src: hwNode("agent", "    model = \"cm4\"\n    bootloader {\n      boot_order = \"nvme,sd\"\n      apply = true\n    }\n"), summary: "CM4 bootloader updates are off", subject: "recipe.hcl:8,15-19"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.severity == hcl.DiagInvalid {
				tt.severity = hcl.DiagError
			}
			_, diags := loadSource(t, tt.src, nil)
			var got []string
			for _, d := range diags {
				if d.Summary == tt.summary && d.Severity == tt.severity && subject(d) == tt.subject {
					return
				}
				got = append(got, fmt.Sprintf("%q at %s", d.Summary, subject(d)))
			}
			t.Errorf("Load = %v; want %q at %s", got, tt.summary, tt.subject)
		})
	}
}

// TestHardwareProfiles: what a valid profile resolves to, and that a
// valid one has no finding of its own.
func TestHardwareProfiles(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Hardware
		// storage is what the node's storage resolves to.
		storage Storage
	}{
		{name: "pi5 nvme, pcie 2, the docs' order", body: "    model = \"pi5\"\n    boot_device = \"nvme\"\n    pcie_gen = 2\n    bootloader {\n      boot_order = \"nvme,sd,usb\"\n      apply = true\n    }\n",
			// raspberrypi/documentation, raspberry-pi/pcie.adoc: BOOT_ORDER=0xf416 boots NVMe first.
			want: Hardware{Model: ModelPi5, BootDevice: BootNVMe, PCIeGen: 2, Bootloader: &Bootloader{BootOrder: "nvme,sd,usb", Value: "0xf416", Apply: true}}, storage: StorageSSD},
		{name: "pi4 usb, quirks, the Pi 4 default order", body: "    model = \"pi4\"\n    boot_device = \"usb\"\n    usb_storage_quirks = [\"152D:0578\", \"174c:55aa:ut\"]\n    bootloader {\n      boot_order = \"sd, usb\"\n    }\n",
			// eeprom-bootloader.adoc: 0xf41 is "SD first, followed by USB-MSD then repeat (default if BOOT_ORDER is empty)".
			want: Hardware{Model: ModelPi4, BootDevice: BootUSB, USBStorageQuirks: []string{"152d:0578:u", "174c:55aa:ut"}, Bootloader: &Bootloader{BootOrder: "sd,usb", Value: "0xf41"}}, storage: StorageSSD},
		{name: "cm5 usb current, config lines kept as written", body: "    model = \"cm5\"\n    usb_max_current = true\n    config_txt = [\"# a comment\", \"dtparam=fan_temp0=45000\", \"arm_64bit=1\"]\n",
			want: Hardware{Model: ModelCM5, USBMaxCurrent: true, ConfigTxt: []string{"# a comment", "dtparam=fan_temp0=45000", "arm_64bit=1"}}},
		{name: "stop ends the order without a restart", body: "    bootloader {\n      boot_order = \"usb,stop\"\n    }\n",
			want: Hardware{Bootloader: &Bootloader{BootOrder: "usb,stop", Value: "0xe4"}}},
		{name: "sd boot device", body: "    boot_device = \"sd\"\n", want: Hardware{BootDevice: BootSD}, storage: StorageSD},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, diags := loadSource(t, hwNode("agent", tt.body), nil)
			for _, d := range diags {
				if d.Summary != "Nobody can log in" {
					t.Errorf("finding %q at %s: %s", d.Summary, subject(d), d.Detail)
				}
			}
			if r == nil {
				t.FailNow()
			}
			n := r.Nodes[0]
			if !reflect.DeepEqual(n.Hardware, tt.want) || n.Storage != tt.storage {
				t.Errorf("hardware = %+v %+v, storage %q; want %+v %+v, storage %q", n.Hardware, n.Hardware.Bootloader, n.Storage, tt.want, tt.want.Bootloader, tt.storage)
			}
		})
	}
}

// TestHardwareDefaultsMerge: a node's hardware block merges into the
// default one field by field, and a list it writes replaces the
// default's, element positions too.
func TestHardwareDefaultsMerge(t *testing.T) {
	src := "defaults {\n  hardware {\n    model = \"pi5\"\n    config_txt = [\"dtparam=audio=off\", \"dtoverlay=disable-bt\"]\n  }\n}\n" +
		"node \"a\" {\n  role = \"agent\"\n  server = \"192.168.1.10\"\n  hardware {\n    boot_device = \"nvme\"\n    config_txt = [concat([\"kernel=x\"], [])[0]]\n  }\n}\n" + server
	_, diags := loadSource(t, src, nil)
	var refused *hcl.Diagnostic
	for _, d := range diags {
		if d.Summary == "config.txt line refused" {
			refused = d
		}
	}
	// The refused element is the node's own, written at line 12; the
	// default's element ranges (line 4) must not be used for it.
	if refused == nil || subject(refused) != "recipe.hcl:12,19-46" {
		t.Fatalf("findings %v; want the node's config_txt element refused at recipe.hcl:12,19-46", diags)
	}
	r, diags := loadSource(t, strings.Replace(src, `[concat(["kernel=x"], [])[0]]`, `["dtparam=pciex1_gen=2"]`, 1), nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	h := r.Nodes[0].Hardware
	if h.Model != ModelPi5 || h.BootDevice != BootNVMe || !slices.Equal(h.ConfigTxt, []string{"dtparam=pciex1_gen=2"}) {
		t.Errorf("merged hardware = %+v", h)
	}
}
