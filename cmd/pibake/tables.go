package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/flash"
	"github.com/pibake/pibake/builder/flashing"
	"github.com/pibake/pibake/internal/bytesize"
)

// writeBuildPaths writes one path per file a build wrote or kept, for
// scripts: each image, and its .img.xz.
func writeBuildPaths(out outputs, results []builder.NodeResult) {
	for _, res := range results {
		if res.Status != builder.StatusBuilt && res.Status != builder.StatusUnchanged {
			continue
		}
		fmt.Fprintln(out.stdout, res.File)
		if res.XZ != "" {
			fmt.Fprintln(out.stdout, res.XZ)
		}
	}
}

// writeBuildTable is the summary for people, on stderr; stdout keeps one
// file path per line for scripts.
func writeBuildTable(o outputs, results []builder.NodeResult) {
	tw := tabwriter.NewWriter(o.stderr, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tROLE\tFILE\tSIZE\tSHA256\tSTATUS")
	for _, r := range results {
		sum := r.SHA256
		if len(sum) > 12 {
			sum = sum[:12] + "…"
		}
		size := "-"
		if r.Size > 0 {
			size = bytesize.MiB(r.Size)
		}
		status := r.Status
		switch r.Status {
		case builder.StatusUnchanged:
			status = "unchanged, skipped"
		case builder.StatusFailed:
			status = "FAILED: " + oneLine(r.Err)
		case builder.StatusOrphan:
			status = "not in the recipe; kept (--prune deletes it)"
		case builder.StatusPruned:
			status = "not in the recipe; deleted"
		}
		file := r.File
		if file == "" {
			file = "-"
		}
		if r.XZ != "" {
			file += " (+ .xz)"
		}
		if sum == "" {
			sum = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Hostname, r.Role, file, size, sum, status)
	}
	tw.Flush()
}

// oneLine is an error's first line.
func oneLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// writePlan shows what will be written where: for each device its model,
// serial, size and current partitions, so the user can tell the disks
// apart before saying yes.
func writePlan(o outputs, size int64, targets []flashing.Target) {
	tw := tabwriter.NewWriter(o.stderr, 0, 0, 2, ' ', 0)
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

// writeFlashTable is the per-target summary, on stderr.
func writeFlashTable(o outputs, results []flash.Result) {
	tw := tabwriter.NewWriter(o.stderr, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTARGET\tNODE\tRESULT\tSHA256\tBOOT")
	for _, r := range results {
		sum := "-"
		if r.State == flash.Verified && len(r.SHA256) > 12 {
			sum = r.SHA256[:12] + "…"
		}
		result := string(r.State)
		if r.State == flash.Failed {
			result = "FAILED: " + oneLine(r.Err)
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

// writeCacheList lists the cache's entries, as JSON or as a table.
func writeCacheList(out outputs, entries []base.Entry, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(out.stdout)
		enc.SetIndent("", "  ")
		if entries == nil {
			entries = []base.Entry{}
		}
		enc.Encode(entries)
		return
	}
	tw := tabwriter.NewWriter(out.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHA256\tON DISK\tLAST USED\tSOURCES")
	for _, e := range entries {
		id := e.SHA256
		if len(id) > 16 {
			id = id[:16]
		}
		used := e.LastUsed.Format("2006-01-02 15:04")
		if e.InUse {
			used += " (in use)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", id, bytesize.MiB(e.Allocated), used, e.Sources)
	}
	tw.Flush()
}
