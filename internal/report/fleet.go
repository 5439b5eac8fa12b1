package report

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pibake/pibake/firstboot/status"
	"github.com/pibake/pibake/internal/safetext"
)

// Planned is a node of the plan, as `pibake watch` shows it.
type Planned struct {
	Hostname string `json:"hostname"`
	Role     string `json:"role"`
	// Batch is an agent's join batch (0 joins first).
	Batch int `json:"batch"`
	// Builds are the build ids of the node's images the out directory
	// built or flashed; none when it has done neither.
	Builds []string `json:"builds,omitempty"`
	// Reports is false for a node whose image has no report URL: it
	// never reports.
	Reports bool `json:"reports"`
}

// NodeState is what is known about one planned node.
type NodeState struct {
	Planned
	// Awaited nodes decide when watching ends.
	Awaited bool `json:"awaited"`
	// Last is the latest record from the node's current build; Since is
	// when its stage or state last changed, by this machine's clock (a
	// Pi's clock is wrong until NTP has set it).
	Last  *status.Record `json:"last,omitempty"`
	Since time.Time      `json:"since,omitzero"`
	// Registered is true once the current build reported the node
	// registered with the cluster.
	Registered bool `json:"registered"`
	// Older is the latest record signed for another build of the node:
	// a card written from an earlier build.
	Older *status.Record `json:"older_build,omitempty"`
	// K3sActive is true once the current build reported k3s active.
	K3sActive bool `json:"k3s_active"`
	// Timeline is the newest maxTimeline records, oldest first.
	Timeline []Step `json:"timeline"`
}

// Settled reports whether nothing more is to be expected from the node
// without help: it registered, or it said it stopped for good (a record
// marked final). A first boot that finished without k3s registered is
// not the end: the node's reporter goes on checking, and says which.
func (n *NodeState) Settled() bool {
	return n.Registered || n.Last != nil && n.Last.Final
}

// Problem says why a settled or silent node is not registered, for the
// summary; empty for a registered node. What the node said is escaped and
// cut (safetext.Clean).
func (n *NodeState) Problem() string {
	c := func(s string, w int) string { return safetext.Clean(s, w) }
	switch {
	case n.Registered:
		return ""
	case !n.Reports:
		return "has no report URL in its image"
	case len(n.Builds) == 0:
		return "neither built nor flashed from the out directory"
	case n.Last == nil && n.Older != nil:
		return fmt.Sprintf("heard only from an older build (%s): the card is not this build's image", c(n.Older.Build, WidthWord))
	case n.Last == nil:
		return "not heard from"
	case n.Last.State == status.StateFailed:
		return fmt.Sprintf("failed at %s: %s", c(n.Last.Stage, WidthWord), c(n.Last.Reason, WidthReason))
	case n.Last.Stage == status.StageDone:
		return "first boot finished, k3s not registered yet: " + c(strings.TrimSpace(n.Last.Reason), WidthReason)
	}
	return fmt.Sprintf("at %s (%s) %s", c(n.Last.Stage, WidthWord), c(n.Last.State, WidthWord), c(n.Last.Reason, WidthReason))
}

// Fleet follows the planned nodes' reports.
type Fleet struct {
	nodes  []*NodeState
	byName map[string]*NodeState
}

// NewFleet follows the planned nodes; await names the nodes that decide
// when watching ends (every node that reports, when empty).
func NewFleet(planned []Planned, await []string) *Fleet {
	f := &Fleet{byName: map[string]*NodeState{}}
	want := map[string]bool{}
	for _, a := range await {
		want[a] = true
	}
	for _, p := range planned {
		n := &NodeState{Planned: p, Awaited: want[p.Hostname] || len(await) == 0 && p.Reports}
		f.nodes = append(f.nodes, n)
		f.byName[p.Hostname] = n
	}
	return f
}

// Apply records an accepted report and returns the node's new state.
func (f *Fleet) Apply(e Event) *NodeState {
	n := f.byName[e.Status.Node]
	if n == nil {
		return nil // the receiver only accepts planned nodes
	}
	st := e.Status
	n.Timeline = append(n.Timeline, step(e))
	if len(n.Timeline) > maxTimeline {
		n.Timeline = slices.Delete(n.Timeline, 0, len(n.Timeline)-maxTimeline)
	}
	if e.OlderBuild {
		n.Older = &st
		return n
	}
	if n.Last == nil || n.Last.Stage != st.Stage || n.Last.State != st.State {
		n.Since = e.Received
	}
	n.Last = &st
	if st.Stage == status.StageRegistered && st.State == status.StateOK {
		n.Registered = true
	}
	if st.Stage == status.StageK3sActive && st.State == status.StateOK {
		n.K3sActive = true
	}
	return n
}

// Nodes are the nodes' states, in plan order.
func (f *Fleet) Nodes() []*NodeState { return f.nodes }

// Done reports whether every awaited node has settled, and whether every
// one of them registered.
func (f *Fleet) Done() (done, registered bool) {
	done, registered = true, true
	for _, n := range f.nodes {
		if !n.Awaited {
			continue
		}
		if !n.Registered {
			registered = false
		}
		if !n.Settled() {
			done = false
		}
	}
	return done, registered
}

// Unregistered are the awaited nodes that have not registered.
func (f *Fleet) Unregistered() []*NodeState {
	var out []*NodeState
	for _, n := range f.nodes {
		if n.Awaited && !n.Registered {
			out = append(out, n)
		}
	}
	return out
}

// Counts are how many awaited nodes are in each phase.
func (f *Fleet) Counts() map[Phase]int {
	c := map[Phase]int{}
	for _, n := range f.nodes {
		if n.Awaited {
			c[n.Phase()]++
		}
	}
	return c
}
