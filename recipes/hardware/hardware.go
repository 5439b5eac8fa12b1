// Package hardware checks a node's hardware block (the model, what it
// boots from, PCIe, USB storage quirks, config.txt lines, the bootloader's
// boot order) and fills in the node's hardware profile.
package hardware

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/pibake/pibake/recipes/diag"
	"github.com/pibake/pibake/recipes/model"

	"github.com/hashicorp/hcl/v2"
)

// Spec is the schema of a node's hardware block.
type Spec struct {
	CPUs             int             `hcl:"cpus,optional"`
	MemoryGB         int             `hcl:"memory_gb,optional"`
	Model            string          `hcl:"model,optional"`
	BootDevice       string          `hcl:"boot_device,optional"`
	PCIeGen          *int            `hcl:"pcie_gen,optional"`
	USBMaxCurrent    bool            `hcl:"usb_max_current,optional"`
	USBStorageQuirks []string        `hcl:"usb_storage_quirks,optional"`
	ConfigTxt        []string        `hcl:"config_txt,optional"`
	Bootloader       *BootloaderSpec `hcl:"bootloader,block"`
}

// BootloaderSpec is the schema of its bootloader block.
type BootloaderSpec struct {
	BootOrder string `hcl:"boot_order,optional"`
	Apply     bool   `hcl:"apply,optional"`
}

// bootModes are the BOOT_ORDER modes a recipe may name
// (eeprom-bootloader.adoc, "BOOT_ORDER fields"). BCM-USB-MSD (5) is left
// out: no Pi 5 has it, and no SSD uses it.
var bootModes = map[string]int{"sd": 0x1, "network": 0x2, "rpiboot": 0x3, "usb": 0x4, "nvme": 0x6, "http": 0x7, "stop": 0xe, "restart": 0xf}

// bootModeNames is bootModes' keys in a stable order, for messages.
var bootModeNames = []string{"sd", "usb", "nvme", "network", "http", "rpiboot", "stop", "restart"}

// deviceMode is the BOOT_ORDER mode that boots each boot device.
var deviceMode = map[model.BootDevice]string{model.BootSD: "sd", model.BootUSB: "usb", model.BootNVMe: "nvme"}

// parseBootOrder turns "nvme,usb,sd" into BOOT_ORDER's value (0xf146):
// the first mode goes into the lowest nibble, and 0xf (restart) follows
// the last one unless it is stop, restart or rpiboot, which must come
// last (rpiboot has no timeout). It returns the modes named, or a problem.
func parseBootOrder(s string) (value string, modes []string, problem string) {
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if _, ok := bootModes[name]; !ok {
			return "", nil, fmt.Sprintf("%q is not a boot mode pibake knows; use %s, separated by commas", name, diag.QuoteList(bootModeNames))
		}
		if slices.Contains(modes, name) {
			return "", nil, fmt.Sprintf("%q is named twice", name)
		}
		if len(modes) > 0 && slices.Contains([]string{"stop", "restart", "rpiboot"}, modes[len(modes)-1]) {
			return "", nil, fmt.Sprintf("%q must be the last mode: the bootloader never gets past it", modes[len(modes)-1])
		}
		modes = append(modes, name)
	}
	nibbles := make([]int, 0, len(modes)+1)
	for _, m := range modes {
		nibbles = append(nibbles, bootModes[m])
	}
	if last := modes[len(modes)-1]; last != "stop" && last != "restart" && last != "rpiboot" {
		nibbles = append(nibbles, 0xf)
	}
	if len(nibbles) > 8 {
		return "", nil, fmt.Sprintf("it has %d modes with the final restart; BOOT_ORDER holds 8", len(nibbles))
	}
	var b strings.Builder
	for i := len(nibbles) - 1; i >= 0; i-- {
		b.WriteString(strconv.FormatInt(int64(nibbles[i]), 16))
	}
	return "0x" + b.String(), modes, ""
}

// quirkPattern is usb-storage's quirk syntax, VID:PID[:flags], with the
// flags the kernel documents (Documentation/admin-guide/kernel-parameters.txt,
// usb-storage.quirks): letters a to y but q, v and x.
var quirkPattern = regexp.MustCompile(`^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})(:([abcdefghijklmnoprstuwy]+))?$`)

// Resolve checks the hardware block h of node n (nil when it has none):
// size, profile, bootloader.
func Resolve(h *Spec, n *model.Node, meta diag.NodeMeta, at func(string) *hcl.Range) hcl.Diagnostics {
	if h == nil {
		return nil
	}
	var diags hcl.Diagnostics
	n.Hardware = model.Hardware{CPUs: h.CPUs, MemoryGB: h.MemoryGB, Model: model.Model(h.Model), BootDevice: model.BootDevice(h.BootDevice), USBMaxCurrent: h.USBMaxCurrent}
	if meta.Ranges.Has("hardware.cpus") && h.CPUs < 1 {
		diags = append(diags, diag.ErrorAt(at("hardware.cpus"), "Invalid hardware", "cpus is %d; it must be at least 1.", h.CPUs))
	}
	if meta.Ranges.Has("hardware.memory_gb") && h.MemoryGB < 1 {
		diags = append(diags, diag.ErrorAt(at("hardware.memory_gb"), "Invalid hardware", "memory_gb is %d; it must be at least 1.", h.MemoryGB))
	}
	hw := &n.Hardware
	if hw.Model != model.ModelUnknown && !slices.Contains(model.Models, hw.Model) {
		diags = append(diags, diag.ErrorAt(at("hardware.model"), "Invalid hardware model",
			"model is %q; it must be one of %s (\"any\" writes settings every model reads).", hw.Model, diag.QuoteList(model.Models)))
		hw.Model = model.ModelUnknown // checked no further
	}
	if hw.BootDevice != model.BootUnknown && !slices.Contains(model.BootDevices, hw.BootDevice) {
		diags = append(diags, diag.ErrorAt(at("hardware.boot_device"), "Invalid boot device",
			"boot_device is %q; it must be %s.", hw.BootDevice, diag.QuoteList(model.BootDevices)))
		hw.BootDevice = model.BootUnknown
	}
	diags = append(diags, checkPCIe(h, hw, at)...)
	diags = append(diags, resolveQuirks(h.USBStorageQuirks, hw, meta, at)...)
	diags = append(diags, resolveConfigTxt(h.ConfigTxt, hw, meta, at)...)
	diags = append(diags, resolveBootloader(h.Bootloader, hw, meta, at)...)
	return diags
}

// checkPCIe: NVMe only where the model has PCIe; the link speed only
// where config.txt sets it (Gen 3 works on many SSDs but is not
// certified); the USB current limit only where the firmware has one.
func checkPCIe(h *Spec, hw *model.Hardware, at func(string) *hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	board := hw.Model
	if board == model.ModelUnknown {
		board = model.ModelAny
	}
	if hw.BootDevice == model.BootNVMe && !board.NVMe() {
		why, usb := fmt.Sprintf("a %s has no PCIe for an SSD", board), fmt.Sprintf("boot a %s from \"usb\"", board)
		if board == model.ModelAny {
			why, usb = "NVMe boot works only on some models, each set up differently", "or boot it from \"usb\""
		}
		diags = append(diags, diag.ErrorAt(at("hardware.boot_device"), "NVMe on a model without PCIe",
			"boot_device is \"nvme\", but %s. Name the model: \"pi5\", \"pi500+\", \"cm5\" or \"cm4\" (BOOT_ORDER mode 6 is CM4, CM5, Pi 5 and 500+ only); %s.", why, usb))
	}
	if hw.USBMaxCurrent && board != model.ModelAny && !board.BCM2712() {
		diags = append(diags, diag.ErrorAt(at("hardware.usb_max_current"), "USB current setting on a model without it",
			"usb_max_current sets usb_max_current_enable=1, which only the Pi 5 family reads; a %s's USB ports share a fixed budget. Remove it, or power the SSD from a powered hub.", board))
	}
	if h.PCIeGen == nil {
		return diags
	}
	hw.PCIeGen = *h.PCIeGen
	switch {
	case hw.PCIeGen < 1 || hw.PCIeGen > 3:
		diags = append(diags, diag.ErrorAt(at("hardware.pcie_gen"), "Invalid PCIe generation", "pcie_gen is %d; it must be 1, 2 (the default speed) or 3.", hw.PCIeGen))
	case !board.PCIeX1():
		diags = append(diags, diag.ErrorAt(at("hardware.pcie_gen"), "PCIe speed on a model without pciex1",
			"pcie_gen sets dtparam=pciex1_gen, which only the Pi 5, 500+ and CM5 have; a %s's PCIe (if any) runs at its fixed speed. Remove pcie_gen, or name one of those models.", board))
	case hw.PCIeGen == 3:
		diags = append(diags, diag.WarningAt(at("hardware.pcie_gen"), "PCIe Gen 3 is not certified",
			"pcie_gen = 3 forces 8 GT/s; the Pi 5's connector is certified for Gen 2 only and \"Gen 3.0 connections may be unstable\" (Raspberry Pi's PCIe documentation). If the SSD drops out or the node does not boot, use 2."))
	}
	return diags
}

// resolveQuirks normalises usb-storage quirks: VID:PID in hex, with the
// flags given or u (do not bind the uas driver, the usual cure for a
// USB-SATA bridge that misbehaves with UAS).
func resolveQuirks(quirks []string, hw *model.Hardware, meta diag.NodeMeta, at func(string) *hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	seen := map[string]bool{}
	for i, q := range quirks {
		m := quirkPattern.FindStringSubmatch(strings.TrimSpace(q))
		subject := meta.ElemAt("hardware.usb_storage_quirks", i, at)
		if m == nil {
			diags = append(diags, diag.ErrorAt(subject, "Invalid USB storage quirk",
				"%q is not VID:PID in hexadecimal (with optional flags), such as \"152d:0578\" or \"152d:0578:u\": lsusb shows the pair as ID 152d:0578. The flags are the kernel's usb-storage.quirks letters; without them pibake uses u (do not use UAS).", q))
			continue
		}
		id := strings.ToLower(m[1] + ":" + m[2])
		if seen[id] {
			diags = append(diags, diag.ErrorAt(subject, "Duplicate USB storage quirk", "%s is listed twice; the kernel takes one set of flags per device.", id))
			continue
		}
		seen[id] = true
		flags := m[4]
		if flags == "" {
			flags = "u"
		}
		hw.USBStorageQuirks = append(hw.USBStorageQuirks, id+":"+flags)
	}
	return diags
}

// bootKeys are config.txt settings a config_txt line may not set, each
// with why: they decide what the firmware boots, and a wrong value stops
// the node before Linux starts, or bypasses what pibake wrote
// (raspberrypi/documentation, config_txt/boot.adoc).
var bootKeys = map[string]string{
	"kernel":              "the image boots the kernel Raspberry Pi OS installs and updates (kernel8.img, kernel_2712.img); another file fails to boot or is never updated",
	"os_prefix":           "it moves where the firmware loads the kernel, device trees, overlays and cmdline.txt from, so pibake's cmdline.txt (memory cgroup, activation) would be read from elsewhere or not at all",
	"upstream_kernel":     "it sets os_prefix to upstream/, which the image does not have, and swaps the device trees",
	"cmdline":             "it names another command-line file, so pibake's arguments in cmdline.txt (memory cgroup, activation) would never reach the kernel",
	"initramfs":           "the OS's first boot (growing the root partition, a new disk id) runs in the initramfs that auto_initramfs=1 loads; another one skips it",
	"ramfsfile":           "the OS's first boot runs in the initramfs that auto_initramfs=1 loads; another one skips it",
	"ramfsaddr":           "the OS's first boot runs in the initramfs that auto_initramfs=1 loads at the address the firmware picks",
	"auto_initramfs":      "the OS's first boot (growing the root partition, a new disk id) runs in the initramfs it loads",
	"device_tree":         "the firmware picks the device tree for the board it runs on; a fixed one boots the wrong board or none (an empty one disables device tree)",
	"device_tree_address": "the kernel's device tree would be loaded where the firmware does not expect it",
	"start_file":          "start_file and fixup_file are a matched pair: a mismatched one stops the board from booting",
	"fixup_file":          "start_file and fixup_file are a matched pair: a mismatched one stops the board from booting",
	"kernel_old":          "it loads the kernel to address 0, where the Raspberry Pi OS kernel does not run",
	"kernel_address":      "the Raspberry Pi OS kernel runs only where the firmware loads it by default",
	"armstub":             "the stub sets up the interrupt controller for the kernel; another one stops the boot",
	"arm_peri_high":       "without a matching device tree and stub it stops the boot",
	"include":             "config_txt lines go into config.txt itself: an included file would have to be on the boot partition, and the EEPROM bootloader does not read include at all",
}

// configTxtProblem says why a config_txt line is refused, or "".
func configTxtProblem(line string) string {
	t := strings.TrimSpace(line)
	switch {
	case strings.IndexFunc(line, unicode.IsControl) >= 0:
		return "it holds a control character (a newline, a tab…): each entry is one line of config.txt"
	case len(line) > 98:
		return fmt.Sprintf("it is %d characters long; the firmware ignores everything past 98", len(line))
	case t == "" || strings.HasPrefix(t, "#"):
		return ""
	case strings.HasPrefix(t, "["):
		return "it is a conditional filter: pibake writes the filter from model, and one here would decide what every following line applies to. Give nodes of another model their own node block"
	case strings.Contains(t, "pibake:"):
		return "it looks like the marker of pibake's own block in config.txt"
	}
	key, value, _ := strings.Cut(t, "=")
	words := strings.Fields(key) // "initramfs file followkernel" has no =
	if len(words) == 0 {
		return "it has no setting before the ="
	}
	key = strings.ToLower(words[0])
	if key == "arm_64bit" {
		if strings.TrimSpace(value) != "1" {
			return "Raspberry Pi OS Lite 64-bit has only 64-bit kernels; arm_64bit=0 asks for a 32-bit kernel that is not there"
		}
		return ""
	}
	if why, ok := bootKeys[key]; ok {
		return fmt.Sprintf("%s: %s", key, why)
	}
	return ""
}

// resolveConfigTxt checks the free-form config.txt lines.
func resolveConfigTxt(lines []string, hw *model.Hardware, meta diag.NodeMeta, at func(string) *hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for i, line := range lines {
		if why := configTxtProblem(line); why != "" {
			diags = append(diags, diag.ErrorAt(meta.ElemAt("hardware.config_txt", i, at), "config.txt line refused",
				"%q is refused: %s.", line, why))
			continue
		}
		hw.ConfigTxt = append(hw.ConfigTxt, line)
	}
	return diags
}

// resolveBootloader checks the bootloader block: an order the model can
// follow that reaches the node's own boot device.
func resolveBootloader(b *BootloaderSpec, hw *model.Hardware, meta diag.NodeMeta, at func(string) *hcl.Range) hcl.Diagnostics {
	if b == nil {
		return nil
	}
	if b.BootOrder == "" {
		if b.Apply {
			return hcl.Diagnostics{diag.ErrorAt(at("hardware.bootloader.apply"), "Nothing to apply",
				"apply = true needs boot_order, such as boot_order = \"nvme,usb,sd\".")}
		}
		return nil
	}
	value, modes, problem := parseBootOrder(b.BootOrder)
	subject := at("hardware.bootloader.boot_order")
	if problem != "" {
		return hcl.Diagnostics{diag.ErrorAt(subject, "Invalid boot order", "boot_order %q: %s.", b.BootOrder, problem)}
	}
	var diags hcl.Diagnostics
	if slices.Contains(modes, "nvme") && hw.Model != model.ModelUnknown && hw.Model != model.ModelAny && !hw.Model.NVMe() {
		diags = append(diags, diag.ErrorAt(subject, "NVMe on a model without PCIe",
			"boot_order names nvme, but a %s has no PCIe for an SSD (BOOT_ORDER mode 6 is CM4, CM5, Pi 5 and 500+ only).", hw.Model))
	}
	if want := deviceMode[hw.BootDevice]; want != "" && !slices.Contains(modes, want) {
		diags = append(diags, diag.ErrorAt(subject, "Boot order skips the boot device",
			"boot_order %q never tries %s, the node's boot_device: once the SD card is gone it would not boot. Add %q.", b.BootOrder, want, want))
	}
	if b.Apply && hw.Model == model.ModelCM4 {
		diags = append(diags, diag.WarningAt(at("hardware.bootloader.apply"), "CM4 bootloader updates are off",
			"rpi-eeprom-update is disabled on a CM4 unless /etc/default/rpi-eeprom-update sets CM4_ENABLE_RPI_EEPROM_UPDATE=1; Raspberry Pi's way is rpiboot (usbboot). The first boot will record the refusal: set BOOT_ORDER with usbboot's recovery/boot.conf."))
	}
	hw.Bootloader = &model.Bootloader{BootOrder: strings.Join(modes, ","), Value: value, Apply: b.Apply}
	return diags
}
