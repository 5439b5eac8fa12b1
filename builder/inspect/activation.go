package inspect

import (
	"strings"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/firstboot"
)

// NotActivated is what a card shows when it has booted but pibake's
// activation never ran: no status record, the payload (secrets included)
// still on the boot partition. On Trixie that was cloud-init starting
// before /boot/firmware was mounted (cloud-init#6614): it found no seed,
// fell back to no datasource, and never ran the activator.
type NotActivated struct {
	// Evidence is what the card shows, one finding each.
	Evidence []string `json:"evidence"`
	// CloudInit is what cloud-init recorded on the root partition, when
	// inspect could read it (an image or a card, not a mounted boot
	// partition).
	CloudInit *diskimg.CloudInitRun `json:"cloud_init,omitempty"`
	// Cause is the likeliest reason, from the evidence.
	Cause string `json:"cause"`
	// Advice says what to do.
	Advice string `json:"advice"`
}

// notActivated judges a card with a payload and no status record: nil when
// it has not booted yet (the OS's first-boot markers are still on
// cmdline.txt), else what it shows. read returns nil for a file that is
// not on the boot partition; ci is cloud-init's record from the root
// partition, nil when there is none or it could not be read.
func notActivated(cmdline string, read func(string) ([]byte, error), ci *diskimg.CloudInitRun) *NotActivated {
	fields := strings.Fields(cmdline)
	for _, a := range fields {
		if a == "resize" || a == "init=/usr/lib/raspberrypi-sys-mods/firstboot" {
			return nil // the OS's own first boot is still to come
		}
	}
	n := &NotActivated{CloudInit: ci, Evidence: []string{
		"the card has booted: the OS's first boot removed its own argument from cmdline.txt",
		"no first-boot status record on the boot partition (pibake/status.json)",
	}}
	if b, err := read(firstboot.Dir + "/k3s-config.yaml"); err == nil && b != nil {
		n.Evidence = append(n.Evidence, "the payload is still on the boot partition, secrets included (pibake/k3s-config.yaml): the activator removes them")
	}
	args := firstboot.ActivationArgs(cmdline)
	if len(args) > 0 {
		n.Evidence = append(n.Evidence, "cmdline.txt still carries the activation's arguments: "+strings.Join(shortArgs(args), " "))
	}
	n.Cause, n.Advice = activationCause(args, ci)
	return n
}

// activationCause is the likeliest reason a booted card was not
// activated, and what to do.
func activationCause(args []string, ci *diskimg.CloudInitRun) (cause, advice string) {
	rebuild := "rebuild with this pibake and flash the card again"
	ordered := false
	for _, a := range args {
		ordered = ordered || strings.HasPrefix(a, "systemd.set_credential_binary=")
	}
	switch {
	case ci != nil && ci.NoDatasource() && ordered:
		return "cloud-init ran without a datasource (" + ci.InstanceID + ") although pibake ordered it after the boot partition's mount: the image's systemd ignores that ordering (it needs systemd 256 or later), or /boot/firmware could not be mounted",
			"read /var/log/cloud-init.log and journalctl -b on the node (or the card's root partition); " + rebuild
	case ci != nil && ci.NoDatasource():
		return "cloud-init started before /boot/firmware was mounted, found no seed and fell back to no datasource (" + ci.InstanceID + "; cloud-init#6614): images built by pibake before it ordered cloud-init after the mount",
			rebuild + ": this pibake's images make cloud-init wait for the boot partition"
	case ci != nil:
		return "cloud-init set up instance " + ci.InstanceID + " (" + ci.Datasource + ") but the activator left no record",
			"read /var/log/cloud-init-output.log and /var/log/pibake/activate.log on the root partition; " + rebuild
	case len(args) > 0 && strings.HasPrefix(args[0], "systemd.run="):
		return "the activation boot did not run the activator, or it could not start (systemd.run= names a file on /boot/firmware)",
			"connect a screen to see the activation boot; " + rebuild
	}
	return "no record of what ran: a mounted boot partition shows no root file system; inspect the card or image itself for cloud-init's record",
		"inspect the card (pibake inspect /dev/sdX) or " + rebuild
}

// shortArgs cuts long arguments (the credentials' base64) for people.
func shortArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if len(a) > 72 {
			a = a[:69] + "..."
		}
		out[i] = a
	}
	return out
}
