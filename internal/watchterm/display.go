// Package watchterm shows `pibake watch` on a terminal or in a log: one
// line per event, a table redrawn in place, or one JSON object per event.
// Everything a node or a stranger sent is escaped and cut before it is
// shown (report.Row, safetext), and refusals are summarised per address
// (Refusals), so nothing anyone on the network sends can take over or
// flood the operator's terminal.
//
// This package is internal to pibake and not a stable API.
package watchterm

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pibake/pibake/firstboot/status"
	"github.com/pibake/pibake/internal/report"
	"github.com/pibake/pibake/internal/safetext"
)

// Mode is how the display shows events.
type Mode int

// Modes.
const (
	Lines Mode = iota // one line per event, for a log
	Table             // a table redrawn in place, on a terminal
	JSON              // one JSON object per event
)

// Widths on screen: a claimed name is quoted only this far (anyone can
// claim any name), and the table's detail column.
const (
	widthClaim  = 24
	widthDetail = 60
)

// Display shows a fleet's events.
type Display struct {
	mode    Mode
	out     io.Writer
	fleet   *report.Fleet
	colour  bool
	now     func() time.Time
	refusal string // the latest refusal line, below the table
	drawn   int    // lines of the table on screen
}

// New makes a display writing to out; colour applies to the table.
func New(mode Mode, out io.Writer, fleet *report.Fleet, colour bool) *Display {
	return &Display{mode: mode, out: out, fleet: fleet, colour: colour, now: time.Now}
}

// LatestRefusal is the line the table shows below itself, in every mode:
// the latest refusal or summary of refusals.
func (d *Display) LatestRefusal() string { return d.refusal }

// Event shows an accepted report; n is the node's state after it.
func (d *Display) Event(e report.Event, n *report.NodeState) {
	st := report.CleanStatus(e.Status)
	switch d.mode {
	case JSON:
		d.json(map[string]any{"event": "report", "received": e.Received.UTC().Format(time.RFC3339), "remote": e.Remote,
			"node": st.Node, "role": n.Role, "batch": n.Batch, "older_build": e.OlderBuild, "registered": n.Registered, "status": st})
	case Lines:
		older := ""
		if e.OlderBuild {
			older = fmt.Sprintf(" (older build %s, not this directory's image)", st.Build)
		}
		reason := ""
		if st.Reason != "" {
			reason = ": " + st.Reason
		}
		fmt.Fprintf(d.out, "%s %s %s: %s %s%s%s\n", e.Received.Format(time.TimeOnly), st.Node, n.Role, st.Stage, st.State, reason, older)
		if st.Stage == status.StageBootloader && st.Facts != nil {
			fmt.Fprintf(d.out, "%s %s booted: %s\n%s %s bootloader: %s\n", e.Received.Format(time.TimeOnly), st.Node, st.Facts.BootLine(),
				e.Received.Format(time.TimeOnly), st.Node, st.Facts.BootloaderLine())
		}
	case Table:
		d.Redraw()
	}
}

// Refused shows a refusal on its own line.
func (d *Display) Refused(r report.Refusal) {
	reason := safetext.Clean(r.Reason, report.WidthReason)
	d.refusal = fmt.Sprintf("%s refused a report from %s%s: %s", r.Received.Format(time.TimeOnly), r.Remote, claims(r.Node), reason)
	switch d.mode {
	case JSON:
		d.json(map[string]any{"event": "refused", "received": r.Received.UTC().Format(time.RFC3339), "remote": r.Remote,
			"node": safetext.Clean(r.Node, widthClaim), "http_status": r.Status, "kind": r.Kind, "reason": reason})
		return
	case Lines:
		fmt.Fprintln(d.out, d.refusal)
		return
	}
	d.Redraw()
}

// Summarised shows a count of refusals from one address.
func (d *Display) Summarised(s Summary) {
	d.refusal = fmt.Sprintf("%s %s", s.To.Format(time.TimeOnly), s)
	switch d.mode {
	case JSON:
		d.json(map[string]any{"event": "refusals", "from": s.From.UTC().Format(time.RFC3339), "to": s.To.UTC().Format(time.RFC3339),
			"remote": s.Remote, "count": s.Count, "kinds": s.Kinds})
		return
	case Lines:
		fmt.Fprintln(d.out, d.refusal)
		return
	}
	d.Redraw()
}

// claims names the node a refused report claimed to be from: anyone can
// send one, so only the start of the name is quoted, escaped.
func claims(node string) string {
	if node == "" {
		return ""
	}
	return fmt.Sprintf(" (claiming to be \"%s\")", safetext.Clean(node, widthClaim))
}

func (d *Display) json(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain maps and strings: cannot fail
	}
	fmt.Fprintf(d.out, "%s\n", b)
}

const (
	ansiReset  = "\x1b[0m"
	ansiGreen  = "\x1b[32m"
	ansiRed    = "\x1b[31m"
	ansiYellow = "\x1b[33m"
)

// Redraw draws the table over the previous one (Table mode only).
func (d *Display) Redraw() {
	if d.mode != Table {
		return
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tBATCH\tSTAGE\tSTATE\tSINCE\tDETAIL")
	now := d.now()
	for _, n := range d.fleet.Nodes() {
		r := n.Row()
		since := "-"
		if !r.Since.IsZero() {
			since = now.Sub(r.Since).Truncate(time.Second).String() + " ago"
		}
		state := r.State
		if d.colour {
			state = colour(r, state)
		}
		detail := r.Detail
		if detail == "" {
			detail = r.Booted // how it booted, once its first boot has looked
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Node, r.Role, r.Batch, r.Stage, state, since, shorten(detail, widthDetail))
	}
	tw.Flush()
	if d.refusal != "" {
		b.WriteString("\n" + d.refusal + "\n")
	}
	out := b.String()
	if d.drawn > 0 {
		fmt.Fprintf(d.out, "\x1b[%dA\x1b[J", d.drawn) // back to the table's first line, clear below
	}
	io.WriteString(d.out, out)
	d.drawn = strings.Count(out, "\n")
}

// shorten cuts text that is already clean to n runes.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-len(safetext.Cut)]) + safetext.Cut
}

// colour marks a state on a terminal: green registered, red failed,
// yellow waiting. Every state gets escapes of the same length, so
// tabwriter's column widths stay right.
func colour(r report.Row, state string) string {
	c := ansiReset // same width of escapes as the coloured ones
	switch {
	case r.Phase == report.PhaseRegistered:
		c = ansiGreen
	case state == "failed":
		c = ansiRed
	case state == "waiting":
		c = ansiYellow
	}
	return c + state + ansiReset
}

// Finish redraws the table a last time and writes the summary to errOut:
// every awaited node registered, or which did not and why. why says why
// watching stopped early ("" when it did not).
func (d *Display) Finish(errOut io.Writer, why string) {
	d.Redraw()
	_, registered := d.fleet.Done()
	missing := d.fleet.Unregistered()
	if d.mode == JSON {
		list := []map[string]string{}
		for _, n := range missing {
			list = append(list, map[string]string{"node": n.Hostname, "problem": n.Problem()})
		}
		d.json(map[string]any{"event": "summary", "stopped": why, "registered": registered && why == "", "missing": list})
		return
	}
	if len(missing) == 0 && why == "" {
		fmt.Fprintf(errOut, "pibake watch: every awaited node registered\n")
		return
	}
	if why == "" {
		why = "every awaited node has registered or stopped"
	}
	fmt.Fprintf(errOut, "pibake watch: %s; %d of the awaited nodes did not register:\n", why, len(missing))
	for _, n := range missing {
		fmt.Fprintf(errOut, "  %s: %s\n", n.Hostname, n.Problem())
	}
}
