package flashing

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/pibake/pibake/builder/flash"
	"github.com/pibake/pibake/internal/bytesize"
)

// WritePlan shows what will be written where: for each device its model,
// serial, size and current partitions, so the user can tell the disks
// apart before saying yes.
func WritePlan(w io.Writer, size int64, targets []Target) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Image size %s.\nTARGET\tWRITES\tDEVICE\tPARTITIONS NOW\n", strings.TrimSpace(bytesize.Format(size)))
	for _, t := range targets {
		what, parts := "plain file", "-"
		if n := t.Target.Existing; n > 0 {
			what = "plain file, " + strings.TrimSpace(bytesize.Format(n)) + " there now"
		}
		if d := t.Target.Disk; d != nil {
			what = d.String()
			if d.Transport != "" {
				what += " (" + d.Transport + ")"
			}
			var ps []string
			for _, p := range d.Partitions {
				s := p.Name + " " + strings.TrimSpace(bytesize.Format(p.Size))
				if p.FS != "" || p.Label != "" {
					s += " " + strings.TrimSpace(p.FS+" "+p.Label)
				}
				ps = append(ps, s)
			}
			parts = "none"
			if len(ps) > 0 {
				parts = strings.Join(ps, ", ")
			}
		}
		node := t.Node
		if node == "" {
			node = "the image"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Target.Path, node, what, parts)
	}
	tw.Flush()
}

// WriteResults is the per-target summary, for people: every target not
// verified says DO NOT BOOT.
func WriteResults(w io.Writer, results []flash.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTARGET\tNODE\tRESULT\tSHA256\tBOOT")
	for _, r := range results {
		sum := "-"
		if r.State == flash.Verified && len(r.SHA256) > 12 {
			sum = r.SHA256[:12] + "…"
		}
		result := string(r.State)
		if r.State == flash.Failed {
			result = "FAILED: " + firstLine(r.Err)
		}
		boot := r.Boot
		switch {
		case r.Boot == "untouched":
			boot = "untouched: nothing was written to it"
		case r.State != flash.Verified:
			boot = "DO NOT BOOT: " + boot
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Target.Path, r.Source, result, sum, boot)
	}
	tw.Flush()
}

// firstLine is an error's first line.
func firstLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
