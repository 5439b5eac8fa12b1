package builder

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"text/tabwriter"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/firstboot"
)

// Inspection is what `pibake inspect` reports about an image. It never
// holds a secret: the payload summary comes from node.json, which has none.
type Inspection struct {
	Path       string              `json:"path"`
	Size       int64               `json:"size"`
	DiskID     string              `json:"disk_id"`
	Partitions []diskimg.Partition `json:"partitions"`
	Release    diskimg.Release     `json:"release"`
	BootFree   int64               `json:"boot_free_bytes"`
	Payload    *PayloadSummary     `json:"payload,omitempty"`
}

// PayloadSummary describes the pibake payload on a built image.
type PayloadSummary struct {
	Hostname    string `json:"hostname"`
	Role        string `json:"role"`
	Cluster     string `json:"cluster"`
	Joins       string `json:"joins,omitempty"`
	ClusterInit bool   `json:"cluster_init,omitempty"`
	Method      string `json:"method"`
	BuildID     string `json:"build_id"`
}

// Inspect reads an image without changing it.
func Inspect(imagePath string) (*Inspection, error) {
	im, err := diskimg.Open(imagePath, false)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	rel, err := im.DetectRelease()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", imagePath, err)
	}
	free, err := im.FreeBootBytes()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", imagePath, err)
	}
	ins := &Inspection{
		Path:       imagePath,
		DiskID:     fmt.Sprintf("%08x", im.DiskID),
		Partitions: im.Partitions,
		Release:    rel,
		BootFree:   free,
	}
	ins.Size = im.Size()
	if b, err := im.ReadBootFile(path.Join(firstboot.Dir, "node.json")); err == nil {
		var p PayloadSummary
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("image %s: boot partition: %s/node.json: %w", imagePath, firstboot.Dir, err)
		}
		ins.Payload = &p
	} else if !errors.Is(err, diskimg.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", imagePath, err)
	}
	return ins, nil
}

// WriteJSON writes the inspection as indented JSON.
func (ins *Inspection) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(ins)
}

// WriteText writes the inspection for people.
func (ins *Inspection) WriteText(w io.Writer) error {
	var b strings.Builder
	r := ins.Release
	fmt.Fprintf(&b, "image:      %s (%s)\n", ins.Path, humanBytes(ins.Size))
	fmt.Fprintf(&b, "disk id:    %s\n", ins.DiskID)
	fmt.Fprintf(&b, "os:         %s\n", orDash(r.PrettyName))
	fmt.Fprintf(&b, "hostname:   %s\n", orDash(r.Hostname))
	style := map[string]string{
		diskimg.StyleBookworm: "bookworm (first boot runs init=/usr/lib/raspberrypi-sys-mods/firstboot)",
		diskimg.StyleTrixie:   "trixie (the initramfs grows the root when cmdline has resize)",
		diskimg.StyleBooted:   "neither first-boot marker on the cmdline (booted before, or unknown)",
	}[r.Style]
	fmt.Fprintf(&b, "style:      %s\n", style)
	fmt.Fprintf(&b, "cloud-init: %s\n", yesNo(r.CloudInit))
	fmt.Fprintf(&b, "activation: %s (what firstboot method \"auto\" uses)\n", r.Activation)
	fmt.Fprintf(&b, "cmdline:    %s\n", r.Cmdline)
	fmt.Fprintf(&b, "boot:       %d-byte clusters, %s free\n\n", r.BootClusterBytes, humanBytes(ins.BootFree))
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PART\tTYPE\tSTART\tSECTORS\tSIZE\tFS\tLABEL")
	for _, p := range ins.Partitions {
		fmt.Fprintf(tw, "%d\t0x%02x\t%d\t%d\t%s\t%s\t%s\n", p.Index, p.Type, p.StartSector, p.Sectors, humanBytes(p.Size()), orDash(p.FileSystem), orDash(p.Label))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if p := ins.Payload; p != nil {
		joins := p.Joins
		if joins == "" {
			joins = "founds the cluster"
			if p.ClusterInit {
				joins += " (cluster-init)"
			}
		}
		_, err := fmt.Fprintf(w, "\npibake payload:\n  hostname: %s\n  role:     %s\n  cluster:  %s\n  joins:    %s\n  method:   %s\n  build:    %s\n",
			p.Hostname, p.Role, p.Cluster, joins, p.Method, p.BuildID)
		return err
	}
	_, err := io.WriteString(w, "\npibake payload: none (not built by pibake)\n")
	return err
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
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
