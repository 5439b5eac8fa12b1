package report

import (
	"strconv"
	"time"

	"github.com/pibake/pibake/firstboot/status"
	"github.com/pibake/pibake/internal/safetext"
)

// Widths, in runes, that what a node says is cut to wherever it is shown:
// a stage, state or build id (a few words at most), and a reason or log
// line.
const (
	WidthWord   = 32
	WidthReason = 200
)

// Phase is where a node stands, in the few words watch colours and counts
// it by.
type Phase string

// Phases, in the order a first boot goes through them, then the ends.
const (
	PhaseSilent       Phase = "not heard from"
	PhaseActivating   Phase = "activating"
	PhaseFirstBoot    Phase = "first boot"
	PhaseK3sInstall   Phase = "k3s installing"
	PhaseK3sActive    Phase = "k3s active"
	PhaseRegistered   Phase = "registered"
	PhaseProblem      Phase = "problem"
	PhaseStopped      Phase = "stopped for good"
	PhaseOlderBuild   Phase = "older build"
	PhaseNotReporting Phase = "does not report"
	PhaseNotBuilt     Phase = "not built"
)

// Phases are every phase, in the order they are counted.
var Phases = []Phase{PhaseSilent, PhaseActivating, PhaseFirstBoot, PhaseK3sInstall, PhaseK3sActive, PhaseRegistered,
	PhaseProblem, PhaseStopped, PhaseOlderBuild, PhaseNotReporting, PhaseNotBuilt}

// Phase classifies the node.
func (n *NodeState) Phase() Phase {
	switch {
	case n.Registered:
		return PhaseRegistered
	case !n.Reports:
		return PhaseNotReporting
	case len(n.Builds) == 0:
		return PhaseNotBuilt
	case n.Last == nil && n.Older != nil:
		return PhaseOlderBuild
	case n.Last == nil:
		return PhaseSilent
	case n.Last.Final:
		return PhaseStopped
	case n.Last.State == status.StateFailed:
		return PhaseProblem
	}
	switch n.Last.Stage {
	case status.StageActivate:
		return PhaseActivating
	case status.StageK3sInstall, status.StageK3sStart:
		return PhaseK3sInstall
	case status.StageK3sActive:
		if n.Last.State == status.StateOK {
			return PhaseK3sActive
		}
		return PhaseK3sInstall
	case status.StageRegistered, status.StagePackages, status.StageDone:
		if n.K3sActive {
			return PhaseK3sActive
		}
		// The first boot went on past k3s without it ever running.
		return PhaseProblem
	}
	return PhaseFirstBoot
}

// Row is what watch shows of one node, in its table and on its page:
// every string a node sent escaped and cut (safetext.Clean), so it is fit
// for a terminal, JSON and a page alike.
type Row struct {
	Node  string `json:"node"`
	Role  string `json:"role"`
	Batch string `json:"batch"` // "-" for a server
	Phase Phase  `json:"phase"`
	Stage string `json:"stage"`
	State string `json:"state"`
	// Since is when the stage or state last changed (zero: never heard).
	Since   time.Time `json:"since,omitzero"`
	Detail  string    `json:"detail"`
	Awaited bool      `json:"awaited"`
	// Booted and Bootloader say how the node booted (root device and
	// bus, memory cgroup, board) and what its bootloader boots, once its
	// first boot has looked (status.Facts).
	Booted     string `json:"booted,omitempty"`
	Bootloader string `json:"bootloader,omitempty"`
}

// Row is the node's row.
func (n *NodeState) Row() Row {
	r := Row{Node: safetext.Clean(n.Hostname, WidthReason), Role: n.Role, Batch: "-", Phase: n.Phase(),
		Stage: "-", State: string(PhaseSilent), Since: n.Since, Awaited: n.Awaited}
	if n.Role == "agent" {
		r.Batch = strconv.Itoa(n.Batch)
	}
	if n.Last != nil {
		r.Stage, r.State, r.Detail = n.Last.Stage, n.Last.State, n.Last.Reason
		r.Booted, r.Bootloader = bootLines(n.Last)
	}
	switch {
	case !n.Reports:
		r.State = string(PhaseNotReporting)
	case len(n.Builds) == 0:
		r.State = string(PhaseNotBuilt)
	case n.Last == nil && n.Older != nil:
		r.Stage, r.State, r.Detail = n.Older.Stage, n.Older.State, "older build "+n.Older.Build+": not this directory's image"
	}
	if n.Registered {
		r.State = string(PhaseRegistered)
	}
	r.Stage, r.State = safetext.Clean(r.Stage, WidthWord), safetext.Clean(r.State, WidthWord)
	r.Detail = safetext.Clean(r.Detail, WidthReason)
	return r
}

// Step is one record in a node's timeline, cleaned as a Row is.
type Step struct {
	Received time.Time `json:"received"`
	Stage    string    `json:"stage"`
	State    string    `json:"state"`
	Reason   string    `json:"reason,omitempty"`
	// Older marks a record of another, earlier build of the node.
	Older bool `json:"older,omitempty"`
}

// maxTimeline is how many steps a node's timeline keeps, the newest: a
// first boot has about 20; a node retrying for hours would have more.
const maxTimeline = 64

func step(e Event) Step {
	return Step{Received: e.Received, Stage: safetext.Clean(e.Status.Stage, WidthWord), State: safetext.Clean(e.Status.State, WidthWord),
		Reason: safetext.Clean(e.Status.Reason, WidthReason), Older: e.OlderBuild}
}

// CleanStatus is a status record with every string cut and escaped as a
// Row's are, for JSON lines a terminal may show.
func CleanStatus(s status.Record) status.Record {
	w := safetext.Clean
	c := status.Record{Version: s.Version, Node: w(s.Node, WidthReason), Role: w(s.Role, WidthWord), Build: w(s.Build, WidthWord),
		Stage: w(s.Stage, WidthWord), State: w(s.State, WidthWord), Time: w(s.Time, WidthWord), Boot: w(s.Boot, WidthWord),
		Reason: w(s.Reason, WidthReason), Final: s.Final}
	for _, l := range s.Log {
		c.Log = append(c.Log, w(l, WidthReason))
	}
	if f := s.Facts; f != nil {
		c.Facts = &status.Facts{Model: w(f.Model, WidthReason), Root: w(f.Root, WidthWord), Transport: w(f.Transport, WidthWord),
			USBID: w(f.USBID, WidthWord), USBDriver: w(f.USBDriver, WidthWord), MemoryCgroup: f.MemoryCgroup,
			BootOrder: w(f.BootOrder, WidthWord), BootOrderDefault: f.BootOrderDefault, BootOrderStaged: w(f.BootOrderStaged, WidthWord),
			BootloaderVersion: w(f.BootloaderVersion, WidthReason), BootloaderSource: w(f.BootloaderSource, WidthWord),
			BootloaderProblem: w(f.BootloaderProblem, WidthReason)}
	}
	return c
}

// bootLines are how the node booted and what its bootloader boots, from
// the facts of its latest record, cleaned: empty before the first boot's
// bootloader stage.
func bootLines(s *status.Record) (booted, bootloader string) {
	if s == nil || s.Facts == nil {
		return "", ""
	}
	f := CleanStatus(*s).Facts
	return f.BootLine(), f.BootloaderLine()
}
