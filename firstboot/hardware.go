package firstboot

import (
	"fmt"
	"strings"

	"github.com/pibake/pibake/recipes"
)

// ConfigTxt renders the lines of pibake's block in a node's config.txt
// (configtxt.Patch places them), or nil when its hardware profile
// sets nothing there. The block opens with [all], so that no filter of
// the base (a [cm5] section, say) combines with its own, then the model's
// filter, and ends with [all], so that nothing after it is filtered
// (raspberrypi/documentation, config_txt/conditional.adoc: "Filters of
// different types can be combined"; "[all] resets all previously set
// filters").
func ConfigTxt(n *recipes.Node) []string {
	h := n.Hardware
	var lines []string
	// dtparam=pciex1 (alias nvme) enables the Pi 5's external PCIe
	// connector, which the firmware leaves off unless a HAT+ asks for it;
	// pciex1_gen sets its speed (raspberry-pi/pcie.adoc). The 500+'s
	// built-in M.2 slot is on without it.
	if (h.BootDevice == recipes.BootNVMe || h.PCIeGen > 0) && (h.Model == recipes.ModelPi5 || h.Model == recipes.ModelCM5) {
		lines = append(lines, "dtparam=pciex1")
	}
	if h.PCIeGen > 0 {
		lines = append(lines, fmt.Sprintf("dtparam=pciex1_gen=%d", h.PCIeGen))
	}
	// The Pi 5 limits USB ports to 600 mA in all unless the supply says
	// it gives 5 A; usb_max_current_enable=1 lifts the limit.
	if h.USBMaxCurrent {
		lines = append(lines, "usb_max_current_enable=1")
	}
	lines = append(lines, h.ConfigTxt...)
	if len(lines) == 0 {
		return nil
	}
	head := []string{"# " + n.Hostname + ": " + profileLine(h), "[all]"}
	if f := h.Model.ConfigFilter(); f != "[all]" {
		head = append(head, f)
	}
	return append(append(head, lines...), "[all]")
}

// profileLine names a profile in the block's comment.
func profileLine(h recipes.Hardware) string {
	model := h.Model
	if model == recipes.ModelUnknown {
		model = recipes.ModelAny
	}
	s := "model " + string(model)
	if h.BootDevice != recipes.BootUnknown {
		s += ", boots from " + string(h.BootDevice)
	}
	return s
}

// quirksArg is the kernel argument that gives usb-storage its quirks, one
// argument for every device (Documentation/admin-guide/kernel-parameters.txt,
// usb-storage.quirks=VID:PID:Flags[,VID:PID:Flags]). It stays on
// cmdline.txt for good: it is not one of the activation's arguments.
func quirksArg(n *recipes.Node) []string {
	q := n.Hardware.USBStorageQuirks
	if len(q) == 0 {
		return nil
	}
	return []string{"usb-storage.quirks=" + strings.Join(q, ",")}
}

// hardwareEnv is the profile as node.env variables, for the first boot's
// bootloader stage (templates/bootfacts.sh).
func hardwareEnv(n *recipes.Node) []struct{ name, value string } {
	h := n.Hardware
	order, apply, probe := "", "0", "0"
	if b := h.Bootloader; b != nil {
		order = b.Value
		apply = boolFlag(b.Apply)
		// A Pi 5's bootloader sees an NVMe SSD behind an adapter that
		// is not a HAT+ only with PCIE_PROBE=1 (eeprom-bootloader.adoc:
		// "Flagship models since Raspberry Pi 5 only").
		probe = boolFlag(b.Apply && h.BootDevice == recipes.BootNVMe && h.Model == recipes.ModelPi5)
	}
	return []struct{ name, value string }{
		{name: "PIBAKE_MODEL", value: string(h.Model)},
		{name: "PIBAKE_BOOT_DEVICE", value: string(h.BootDevice)},
		{name: "PIBAKE_BOOT_ORDER", value: order},
		{name: "PIBAKE_BOOT_ORDER_APPLY", value: apply},
		{name: "PIBAKE_PCIE_PROBE", value: probe},
	}
}
