// Package summary renders what a build did and what the cache holds: the
// tables people read (on stderr for a build) and the paths scripts read.
package summary

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/internal/bytesize"
)

// BuildPaths writes one path per file a build wrote or kept, for
// scripts: each image, and its .img.xz.
func BuildPaths(w io.Writer, results []builder.NodeResult) {
	for _, res := range results {
		if res.Status != builder.StatusBuilt && res.Status != builder.StatusUnchanged {
			continue
		}
		fmt.Fprintln(w, res.File)
		if res.XZ != "" {
			fmt.Fprintln(w, res.XZ)
		}
	}
}

// BuildTable is the summary for people, on stderr; stdout keeps one
// file path per line for scripts.
func BuildTable(w io.Writer, results []builder.NodeResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
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
			status = "FAILED: " + oneLine(r.Err) + stays(r)
		case builder.StatusInterrupted:
			status = "interrupted" + stays(r)
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

// stays says what a node that failed or was interrupted still has
// published: FILE is then the image from before.
func stays(r builder.NodeResult) string {
	if r.File == "" {
		return "; not built"
	}
	return "; its image from before stays"
}

// oneLine is an error's first line.
func oneLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// CacheList lists the cache's entries, as JSON or as a table.
func CacheList(w io.Writer, entries []base.Entry, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if entries == nil {
			entries = []base.Entry{}
		}
		enc.Encode(entries)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
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
