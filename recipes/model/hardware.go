package model

import (
	"fmt"
	"strings"
)

// Hardware is what the recipe declares about a node's machine: its size
// (for the k3s sizing warning) and its hardware profile, which decides
// what pibake writes into config.txt and cmdline.txt and what the first
// boot checks in the bootloader. Zero means nothing declared.
type Hardware struct {
	CPUs     int `json:"cpus,omitempty"`
	MemoryGB int `json:"memory_gb,omitempty"`
	// Model is the board the image is for; ModelUnknown (not declared)
	// behaves as ModelAny.
	Model Model `json:"model,omitempty"`
	// BootDevice is what the node boots from once in service.
	BootDevice BootDevice `json:"boot_device,omitempty"`
	// PCIeGen, when set, is the Pi 5 family's external PCIe link speed.
	PCIeGen int `json:"pcie_gen,omitempty"`
	// USBMaxCurrent lifts the Pi 5 family's USB current limit on a
	// supply that does not announce 5 A (usb_max_current_enable=1).
	USBMaxCurrent bool `json:"usb_max_current,omitempty"`
	// USBStorageQuirks are usb-storage quirks as VID:PID:flags, lowercase
	// (flags "u", do not bind the uas driver, when the recipe gives none).
	USBStorageQuirks []string `json:"usb_storage_quirks,omitempty"`
	// ConfigTxt are extra config.txt lines, under the model's filter.
	ConfigTxt  []string    `json:"config_txt,omitempty"`
	Bootloader *Bootloader `json:"bootloader,omitempty"`
}

// IsZero reports whether the recipe declared nothing about the machine.
func (h Hardware) IsZero() bool {
	return h.CPUs == 0 && h.MemoryGB == 0 && h.Model == ModelUnknown && h.BootDevice == BootUnknown &&
		h.PCIeGen == 0 && !h.USBMaxCurrent && len(h.USBStorageQuirks) == 0 && len(h.ConfigTxt) == 0 && h.Bootloader == nil
}

// Describe sums up the profile: the model and what it boots from, then
// what pibake sets for it ("pi5 from nvme, pcie gen 3, BOOT_ORDER=0xf146
// applied"); empty for a profile that says nothing of the kind.
func (h Hardware) Describe() string {
	var parts []string
	if h.Model != ModelUnknown || h.BootDevice != BootUnknown {
		model := h.Model
		if model == ModelUnknown {
			model = ModelAny
		}
		p := string(model)
		if h.BootDevice != BootUnknown {
			p += " from " + string(h.BootDevice)
		}
		parts = append(parts, p)
	}
	if h.PCIeGen > 0 {
		parts = append(parts, fmt.Sprintf("pcie gen %d", h.PCIeGen))
	}
	if h.USBMaxCurrent {
		parts = append(parts, "usb max current")
	}
	if len(h.USBStorageQuirks) > 0 {
		parts = append(parts, "quirks "+strings.Join(h.USBStorageQuirks, " "))
	}
	if len(h.ConfigTxt) > 0 {
		parts = append(parts, Plural(len(h.ConfigTxt), "config.txt line"))
	}
	if b := h.Bootloader; b != nil {
		how := "checked"
		if b.Apply {
			how = "applied"
		}
		parts = append(parts, fmt.Sprintf("BOOT_ORDER=%s %s", b.Value, how))
	}
	return strings.Join(parts, ", ")
}

// Bootloader is what the first boot checks (and with Apply, sets) in the
// board's bootloader EEPROM.
type Bootloader struct {
	// BootOrder is the order as the recipe names it: "nvme,usb,sd".
	BootOrder string `json:"boot_order"`
	// Value is BOOT_ORDER as the bootloader reads it: "0xf146" (modes
	// are tried from the lowest nibble up; 0xf restarts the list).
	Value string `json:"value"`
	// Apply has the first boot stage the order with rpi-eeprom-config
	// --apply, for the next reboot.
	Apply bool `json:"apply"`
}

// Model is a Raspberry Pi model, as config.txt's model filters name them
// (raspberrypi/documentation, config_txt/conditional.adoc).
type Model string

// The models a hardware profile may name.
const (
	ModelUnknown   Model = ""
	ModelAny       Model = "any"
	ModelPi4       Model = "pi4"
	ModelPi400     Model = "pi400"
	ModelCM4       Model = "cm4"
	ModelPi5       Model = "pi5"
	ModelPi500     Model = "pi500"
	ModelPi500Plus Model = "pi500+"
	ModelCM5       Model = "cm5"
)

// Models lists the models a recipe may name.
var Models = []Model{ModelPi4, ModelPi400, ModelCM4, ModelPi5, ModelPi500, ModelPi500Plus, ModelCM5, ModelAny}

// ConfigFilter is the config.txt conditional filter whose section only
// this model reads: [pi4] is also read by a Pi 400 and a CM4, [pi5] by a
// Pi 500 and a CM5, [pi500] by the 500 and the 500+; [all] for any model.
func (m Model) ConfigFilter() string {
	switch m {
	case ModelPi4, ModelPi400, ModelCM4, ModelPi5, ModelCM5:
		return "[" + string(m) + "]"
	case ModelPi500, ModelPi500Plus:
		return "[pi500]"
	}
	return "[all]"
}

// BCM2712 reports whether the model is of the Pi 5 family, whose firmware
// knows usb_max_current_enable and PSU_MAX_CURRENT.
func (m Model) BCM2712() bool {
	return m == ModelPi5 || m == ModelPi500 || m == ModelPi500Plus || m == ModelCM5
}

// NVMe reports whether the model can boot from NVMe: BOOT_ORDER mode 6 is
// "CM4, CM5, Raspberry Pi 5, and 500+ only" (raspberrypi/documentation,
// computers/raspberry-pi/eeprom-bootloader.adoc). The Pi 4, 400 and 500
// have no PCIe for an SSD.
func (m Model) NVMe() bool {
	return m == ModelPi5 || m == ModelPi500Plus || m == ModelCM4 || m == ModelCM5
}

// PCIeX1 reports whether the model's PCIe link is set with dtparam=pciex1
// and pciex1_gen (the Pi 5 family's external connector; the CM4's is on
// by default, Gen 2 only).
func (m Model) PCIeX1() bool {
	return m == ModelPi5 || m == ModelPi500Plus || m == ModelCM5
}

// BootDevice is what a node boots from.
type BootDevice string

// The boot devices a recipe may name; BootUnknown when it says nothing.
const (
	BootUnknown BootDevice = ""
	BootSD      BootDevice = "sd"
	BootUSB     BootDevice = "usb"
	BootNVMe    BootDevice = "nvme"
)

// BootDevices lists the boot devices a recipe may name.
var BootDevices = []BootDevice{BootSD, BootUSB, BootNVMe}

// Storage is the coarser storage attribute the boot device implies.
func (d BootDevice) Storage() Storage {
	switch d {
	case BootSD:
		return StorageSD
	case BootUSB, BootNVMe:
		return StorageSSD
	}
	return StorageUnknown
}
