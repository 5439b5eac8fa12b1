// Package inspect reads what pibake knows about an image, a card or a
// mounted boot partition without changing it: partitions, release,
// command line, pibake's payload and the first boot's status.
package inspect

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/firstboot/status"
	"github.com/pibake/pibake/internal/bytesize"
	"github.com/pibake/pibake/internal/configtxt"
	"github.com/pibake/pibake/recipes"
)

// Report is what `pibake inspect` says about an image, a card, or a
// mounted boot partition. It never holds a secret: the payload summary
// comes from node.json and the status from status.json, which have none.
type Report struct {
	Path       string              `json:"path"`
	Size       int64               `json:"size,omitempty"`
	DiskID     string              `json:"disk_id,omitempty"`
	Partitions []diskimg.Partition `json:"partitions,omitempty"`
	// Release is nil for a mounted boot partition, which shows no root
	// file system.
	Release  *diskimg.Release `json:"release,omitempty"`
	BootFree int64            `json:"boot_free_bytes,omitempty"`
	// Activation is the first-boot method "auto" picks for this image as a
	// base, or empty with ActivationProblem saying why none fits.
	Activation        recipes.Method `json:"activation,omitempty"`
	ActivationProblem string         `json:"activation_problem,omitempty"`
	Cmdline           string         `json:"cmdline"`
	// ConfigTxt is pibake's block in config.txt, when there is one.
	ConfigTxt []string        `json:"config_txt_block,omitempty"`
	Payload   *PayloadSummary `json:"payload,omitempty"`
	Status    *status.Record  `json:"status,omitempty"`
	History   []status.Record `json:"history,omitempty"`
	// NotActivated is set for a card with a payload and no status record
	// that has booted: pibake's activation never ran.
	NotActivated *NotActivated `json:"not_activated,omitempty"`
}

// PayloadSummary describes the pibake payload on a built image: its
// node.json.
type PayloadSummary = firstboot.Summary

// Read reads an image file, a card (block device) or a mounted boot
// partition (a directory) without changing it.
func Read(p string) (*Report, error) {
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return inspectBootDir(p)
	}
	im, err := openForInspect(p)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	rel, err := im.DetectRelease()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", p, err)
	}
	free, err := im.FreeBootBytes()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", p, err)
	}
	ins := &Report{
		Path:       p,
		Size:       im.Size(),
		DiskID:     fmt.Sprintf("%08x", im.DiskID),
		Partitions: im.Partitions,
		Release:    &rel,
		BootFree:   free,
		Cmdline:    rel.Cmdline,
	}
	if m, err := firstboot.ChooseMethod(recipes.MethodAuto, firstboot.Base{CloudInit: rel.CloudInit, SystemdFirstBoot: rel.SystemdFirstBoot()}); err == nil {
		ins.Activation = m
	} else {
		ins.ActivationProblem = err.Error()
	}
	read := func(name string) ([]byte, error) {
		b, err := im.ReadBootFile(name)
		if errors.Is(err, diskimg.ErrNotExist) {
			return nil, nil
		}
		return b, err
	}
	if err := ins.readPayload(read); err != nil {
		return nil, fmt.Errorf("image %s: %w", p, err)
	}
	if ins.Payload != nil && ins.Status == nil {
		ci, err := im.CloudInitRun()
		if err != nil {
			return nil, fmt.Errorf("image %s: cloud-init's record: %w", p, err)
		}
		ins.NotActivated = notActivated(ins.Cmdline, read, ci)
	}
	return ins, nil
}

// openForInspect opens an image, a card, or an .img.xz, which is read
// where it lies, decoding only the blocks that hold what inspect reads.
func openForInspect(p string) (*diskimg.Image, error) {
	if xz, _ := base.IsXZ(p); !xz {
		return diskimg.Open(p, false)
	}
	x, err := base.OpenXZ(p)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	return diskimg.OpenSource(p, x)
}

// inspectBootDir reads a boot partition mounted on any computer (the card
// of a node that did not come up, say): cmdline.txt, node.json and the
// status pibake's first boot recorded there.
func inspectBootDir(dir string) (*Report, error) {
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline.txt"))
	if err != nil {
		return nil, fmt.Errorf("inspect %s: not a Raspberry Pi OS boot partition: %w", dir, err)
	}
	ins := &Report{Path: dir, Cmdline: strings.TrimSpace(string(cmdline))}
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return b, err
	}
	if err := ins.readPayload(read); err != nil {
		return nil, fmt.Errorf("boot partition %s: %w", dir, err)
	}
	if ins.Payload != nil && ins.Status == nil {
		ins.NotActivated = notActivated(ins.Cmdline, read, nil)
	}
	return ins, nil
}

// readPayload fills in node.json, pibake's block in config.txt and the
// status records; read returns nil for a file that is not there.
func (ins *Report) readPayload(read func(name string) ([]byte, error)) error {
	b, err := read("config.txt")
	if err != nil {
		return err
	}
	if ins.ConfigTxt, _, err = configtxt.Block(b); err != nil {
		return err
	}
	b, err = read(path.Join(firstboot.Dir, "node.json"))
	if err != nil {
		return err
	}
	if b != nil {
		var p PayloadSummary
		if err := json.Unmarshal(b, &p); err != nil {
			return fmt.Errorf("%s/node.json: %w", firstboot.Dir, err)
		}
		ins.Payload = &p
	}
	if b, err = read(path.Join(firstboot.Dir, status.File)); err != nil {
		return err
	}
	if b != nil {
		if ins.Status, err = status.Parse(b); err != nil {
			return fmt.Errorf("%s/%s: %w", firstboot.Dir, status.File, err)
		}
	}
	if b, err = read(path.Join(firstboot.Dir, status.LogFile)); err != nil {
		return err
	}
	ins.History = status.ParseLog(b)
	return nil
}

// WriteJSON writes the inspection as indented JSON.
func (ins *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(ins)
}

// WriteText writes the inspection for people.
func (ins *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	ins.writeImage(&b)
	if len(ins.Partitions) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PART\tTYPE\tSTART\tSECTORS\tSIZE\tFS\tLABEL")
		for _, p := range ins.Partitions {
			fmt.Fprintf(tw, "%d\t0x%02x\t%d\t%d\t%s\t%s\t%s\n", p.Index, p.Type, p.StartSector, p.Sectors, bytesize.Format(p.Size()), orDash(p.FileSystem), orDash(p.Label))
		}
		tw.Flush()
		b.WriteString("\n")
	}
	ins.writePayload(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeImage is the image's (or the boot partition's) header.
func (ins *Report) writeImage(b *strings.Builder) {
	r := ins.Release
	if r == nil {
		fmt.Fprintf(b, "boot partition: %s\ncmdline:    %s\n\n", ins.Path, ins.Cmdline)
		return
	}
	fmt.Fprintf(b, "image:      %s (%s)\n", ins.Path, bytesize.Format(ins.Size))
	fmt.Fprintf(b, "disk id:    %s\n", ins.DiskID)
	fmt.Fprintf(b, "os:         %s\n", orDash(r.PrettyName))
	host := orDash(r.Hostname)
	if p := ins.Payload; p != nil && p.Hostname != "" && p.Hostname != r.Hostname {
		// The root's /etc/hostname is the base's until first boot.
		host = fmt.Sprintf("%s (the base OS's; first boot makes it %s, from the payload below)", host, p.Hostname)
	}
	fmt.Fprintf(b, "hostname:   %s\n", host)
	style := map[diskimg.Style]string{
		diskimg.StyleBookworm: "bookworm (first boot runs init=/usr/lib/raspberrypi-sys-mods/firstboot)",
		diskimg.StyleTrixie:   "trixie (the initramfs grows the root when cmdline has resize)",
		diskimg.StyleBooted:   "neither first-boot marker on the cmdline (booted before, or unknown)",
	}[r.Style]
	fmt.Fprintf(b, "style:      %s\n", style)
	fmt.Fprintf(b, "machine-id: %s\n", r.MachineID)
	fmt.Fprintf(b, "cloud-init: %s\n", yesNo(r.CloudInit))
	if ins.Activation != "" {
		fmt.Fprintf(b, "activation: %s (what firstboot method \"auto\" uses)\n", ins.Activation)
	} else {
		fmt.Fprintf(b, "activation: none fits: %s\n", ins.ActivationProblem)
	}
	fmt.Fprintf(b, "cmdline:    %s\n", r.Cmdline)
	fmt.Fprintf(b, "boot:       %d-byte clusters, %s free\n", r.BootClusterBytes, bytesize.Format(ins.BootFree))
	for _, c := range r.Customised {
		fmt.Fprintf(b, "customised: %s\n", c)
	}
	b.WriteString("\n")
}

// writePayload is pibake's payload and the first boot's status.
func (ins *Report) writePayload(b *strings.Builder) {
	if p := ins.Payload; p != nil {
		joins := p.Joins
		if joins == "" {
			joins = "founds the cluster"
			if p.Init {
				joins += " (cluster-init)"
			}
		}
		fmt.Fprintf(b, "pibake payload:\n  hostname: %s\n  role:     %s\n  cluster:  %s\n  joins:    %s\n  method:   %s\n  build:    %s\n",
			p.Hostname, p.Role, p.Cluster, joins, p.Method, p.BuildID)
		switch p.CA {
		case firstboot.CACarries:
			fmt.Fprintf(b, "  ca:       carries the cluster CA keys (sha256 %s), installed at first boot and then removed from the boot partition\n", p.CAHash)
		case firstboot.CAPins:
			fmt.Fprintf(b, "  ca:       joins with a token pinning the cluster CA sha256 %s\n", p.CAHash)
		default:
			b.WriteString("  ca:       none generated: trusts the server that answers at first contact\n")
		}
		if p.NodePassword {
			b.WriteString("  password: sets /etc/rancher/node/password (derived, stable across rebuilds)\n")
		}
		if p.ReportURL != "" {
			fmt.Fprintf(b, "  reports:  to %s (pibake watch), signed with this node's key\n", p.ReportURL)
		}
		if p.Hardware != nil {
			fmt.Fprintf(b, "  hardware: %s\n", p.Hardware.Describe())
		}
	} else {
		b.WriteString("pibake payload: none (not built by pibake)\n")
	}
	if len(ins.ConfigTxt) > 0 {
		b.WriteString("config.txt: pibake's block, after the image's own lines:\n")
		for _, l := range ins.ConfigTxt {
			fmt.Fprintf(b, "  | %s\n", l)
		}
	}
	s := ins.Status
	if s == nil {
		writeNoStatus(b, ins)
		return
	}
	fmt.Fprintf(b, "\nfirst boot: %s %s at %s%s\n", s.Stage, s.State, s.Time, prefixed(": ", s.Reason))
	for _, line := range s.Log {
		fmt.Fprintf(b, "  | %s\n", line)
	}
	if f := s.Facts; f != nil {
		fmt.Fprintf(b, "booted:     %s\nbootloader: %s\n", f.BootLine(), f.BootloaderLine())
	}
	if len(ins.History) > 0 {
		b.WriteString("history:\n")
		for _, h := range ins.History {
			fmt.Fprintf(b, "  %s  boot %s  %-11s %-8s %s\n", h.Time, h.Boot, h.Stage, h.State, h.Reason)
		}
	}
}

// writeNoStatus says why a built image or card has no status record:
// not booted yet, or booted and never activated.
func writeNoStatus(b *strings.Builder, ins *Report) {
	n := ins.NotActivated
	switch {
	case ins.Payload == nil:
		return
	case n == nil:
		b.WriteString("\nfirst boot: not run yet (the OS's first-boot argument is still on cmdline.txt)\n")
		return
	}
	b.WriteString("\nfirst boot: NOT ACTIVATED: the card has booted, but pibake's activation never ran\n")
	for _, e := range n.Evidence {
		fmt.Fprintf(b, "  - %s\n", e)
	}
	if ci := n.CloudInit; ci != nil {
		ds := ci.Datasource
		if ds == "" {
			ds = "(none recorded)"
		}
		fmt.Fprintf(b, "  - cloud-init's last run: instance %s, datasource %s\n", ci.InstanceID, ds)
	}
	fmt.Fprintf(b, "  cause: %s\n  what to do: %s\n", n.Cause, n.Advice)
}

func prefixed(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
