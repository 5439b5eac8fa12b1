// Package status defines the first-boot status record: what a node's first
// boot writes about itself (the first-boot scripts in firstboot write it;
// inspect reads it from a card, pibake watch receives it over HTTP). It
// stands alone so that its readers need not import the script renderer.
package status

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// The status record: what a node's first boot writes about itself, after
// every change, to /var/lib/pibake/status.json and to pibake/status.json on
// the boot partition (templates/lib.sh: status), with the history as JSON
// lines in status.log beside it. No secrets: only stage names, reasons and
// log lines, which pibake never fills with a token or key.

// Status file names, in /var/lib/pibake and in firstboot.Dir on the boot
// partition.
const (
	File    = "status.json"
	LogFile = "status.log"
)

// Stages of a first boot, in the order they run.
const (
	StageActivate   = "activate"    // the payload installed into the root file system
	StageBootloader = "bootloader"  // the boot device and BOOT_ORDER checked (with apply, staged)
	StageClock      = "clock"       // the clock synchronised (NTP)
	StageUser       = "user"        // the login user's SSH keys and shell
	StageAptUpdate  = "apt-update"  // apt-get update
	StageCgroup     = "cgroup"      // the memory cgroup k3s needs
	StageServerWait = "server-wait" // a joining node waits for the server's API
	StageK3sInstall = "k3s-install" // the k3s install script
	StageK3sStart   = "k3s-start"   // k3s (or k3s-agent) started
	StageK3sActive  = "k3s-active"  // systemd says the k3s service is active
	StageRegistered = "registered"  // server: its API answers with its node; agent: kubelet up, server reachable
	StagePackages   = "packages"    // the optional packages
	StageDone       = "done"        // the first boot finished
)

// States of a stage.
const (
	StateRunning = "running"
	StateOK      = "ok"
	StateWaiting = "waiting" // not done, going on anyway
	StateFailed  = "failed"
)

// Record is one status record.
type Record struct {
	Version int    `json:"version"`
	Node    string `json:"node"`
	Role    string `json:"role"`
	Build   string `json:"build"`
	Stage   string `json:"stage"`
	State   string `json:"state"`
	Time    string `json:"time"`
	// Boot is the start of the kernel's boot_id: records with the same
	// Boot were written in the same boot.
	Boot   string   `json:"boot"`
	Reason string   `json:"reason,omitempty"`
	Log    []string `json:"log,omitempty"`
	// Final is true when nothing more happens without the operator: the
	// first boot stopped for good (a missing memory cgroup, an activation
	// given up), or the reporter stopped waiting for k3s to register.
	Final bool `json:"final,omitempty"`
	// Facts is how the node booted, in every record written after the
	// first boot's bootloader stage looked.
	Facts *Facts `json:"facts,omitempty"`
}

// Facts is what the first boot found about how the node booted
// (templates/bootfacts.sh).
type Facts struct {
	// Model is the board, as its device tree names it.
	Model string `json:"model,omitempty"`
	// Root is the root file system's block device ("nvme0n1p2") and
	// Transport the bus it is on: mmc (SD card or eMMC), usb, nvme,
	// virtio, sata or unknown.
	Root      string `json:"root,omitempty"`
	Transport string `json:"transport"`
	// USBID (VID:PID) and USBDriver (uas, or usb-storage) of a USB root.
	USBID     string `json:"usb_id,omitempty"`
	USBDriver string `json:"usb_driver,omitempty"`
	// MemoryCgroup: the memory controller k3s needs is there.
	MemoryCgroup bool `json:"memory_cgroup"`
	// BootOrder is the bootloader's BOOT_ORDER (BootOrderDefault: not set,
	// so the bootloader's default); empty when the bootloader could not be
	// read. BootOrderStaged is what the first boot staged for the next
	// reboot.
	BootOrder        string `json:"boot_order,omitempty"`
	BootOrderDefault bool   `json:"boot_order_default,omitempty"`
	BootOrderStaged  string `json:"boot_order_staged,omitempty"`
	// BootloaderVersion is the bootloader's build date and timestamp;
	// BootloaderSource the tool its configuration was read with, and
	// BootloaderProblem why it could not be.
	BootloaderVersion string `json:"bootloader_version,omitempty"`
	BootloaderSource  string `json:"bootloader_source,omitempty"`
	BootloaderProblem string `json:"bootloader_problem,omitempty"`
}

// Parse reads a status.json.
func Parse(b []byte) (*Record, error) {
	var s Record
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("status record: %w", err)
	}
	if s.Version != 1 || s.Stage == "" {
		return nil, fmt.Errorf("status record: not a pibake status (version %d, stage %q)", s.Version, s.Stage)
	}
	return &s, nil
}

// ParseLog reads a status.log: one record per line. A line that does
// not parse (cut short by a power cut) is skipped.
func ParseLog(b []byte) []Record {
	var out []Record
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if s, err := Parse(sc.Bytes()); err == nil {
			out = append(out, *s)
		}
	}
	return out
}

// BootLine says how the node booted, for people: "root sda2 on usb
// (152d:0578, usb-storage); memory cgroup present; Raspberry Pi 4 Model B
// Rev 1.5".
func (f *Facts) BootLine() string {
	root := f.Root
	if root == "" {
		root = "(device unknown)"
	}
	s := "root " + root + " on " + f.Transport
	if f.USBID != "" || f.USBDriver != "" {
		s += " (" + strings.Trim(f.USBID+", "+f.USBDriver, ", ") + ")"
	}
	if f.MemoryCgroup {
		s += "; memory cgroup present"
	} else {
		s += "; memory cgroup MISSING (k3s cannot run)"
	}
	if f.Model != "" {
		s += "; " + f.Model
	}
	return s
}

// BootloaderLine says what the bootloader boots, for people: "BOOT_ORDER
// 0xf41 (not set: the default); version 2026/05/17 19:13:18 (timestamp
// 1779045198); read with rpi-eeprom-config", and what the first boot
// staged.
func (f *Facts) BootloaderLine() string {
	var parts []string
	switch {
	case f.BootOrder != "" && f.BootOrderDefault:
		parts = append(parts, "BOOT_ORDER "+f.BootOrder+" (not set: the default)")
	case f.BootOrder != "":
		parts = append(parts, "BOOT_ORDER "+f.BootOrder)
	default:
		parts = append(parts, "not read: "+f.BootloaderProblem)
	}
	if f.BootloaderVersion != "" {
		parts = append(parts, "version "+f.BootloaderVersion)
	}
	if f.BootOrder != "" && f.BootloaderSource != "" {
		parts = append(parts, "read with "+f.BootloaderSource)
	}
	if f.BootOrderStaged != "" {
		parts = append(parts, "BOOT_ORDER "+f.BootOrderStaged+" staged for the next reboot")
	}
	return strings.Join(parts, "; ")
}
