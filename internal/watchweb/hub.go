package watchweb

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/pibake/pibake/internal/report"
)

// NodeView is one tile: the node's row (the facts the table shows, every
// string a node sent already escaped and cut) and its timeline.
type NodeView struct {
	report.Row
	Timeline []report.Step `json:"timeline"`
}

// snapshot is the whole page's state, sent when a browser connects.
type snapshot struct {
	Title   string               `json:"title"`
	Now     time.Time            `json:"now"`
	Phases  []report.Phase       `json:"phases"`
	Nodes   []NodeView           `json:"nodes"`
	Counts  map[report.Phase]int `json:"counts"`
	Refusal string               `json:"refusal"`
	Ended   string               `json:"ended,omitempty"`
}

// update is one change, sent to every connected browser.
type update struct {
	Now     time.Time            `json:"now"`
	Node    *NodeView            `json:"node,omitempty"`
	Counts  map[report.Phase]int `json:"counts,omitempty"`
	Refusal string               `json:"refusal,omitempty"`
	Ended   string               `json:"ended,omitempty"`
}

// message is one server-sent event.
type message struct {
	event string
	data  []byte
}

// Limits: browsers at once, and messages queued for a slow one before it
// is dropped (it reconnects and gets a fresh snapshot).
const (
	maxClients  = 16
	clientQueue = 1024
)

// Hub holds what the page shows and passes every change to the browsers
// that watch it. Its methods are safe for concurrent use; watch's event
// loop calls the setters, the HTTP handlers read.
type Hub struct {
	title string
	now   func() time.Time

	mu      sync.Mutex
	order   []string
	nodes   map[string]NodeView
	counts  map[report.Phase]int
	refusal string
	ended   string
	clients map[chan message]struct{}
}

// NewHub shows the awaited nodes of fleet, in plan order.
func NewHub(title string, fleet *report.Fleet) *Hub {
	h := &Hub{title: title, now: time.Now, nodes: map[string]NodeView{}, clients: map[chan message]struct{}{}}
	for _, n := range fleet.Nodes() {
		if n.Awaited {
			h.order = append(h.order, n.Hostname)
			h.nodes[n.Hostname] = view(n)
		}
	}
	h.counts = fleet.Counts()
	return h
}

func view(n *report.NodeState) NodeView {
	return NodeView{Row: n.Row(), Timeline: append([]report.Step(nil), n.Timeline...)}
}

// Node shows the node's new state, and the fleet's counts.
func (h *Hub) Node(n *report.NodeState, counts map[report.Phase]int) {
	if !n.Awaited {
		return
	}
	v := view(n)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodes[n.Hostname] = v
	h.counts = counts
	h.broadcast("node", update{Now: h.now(), Node: &v, Counts: counts})
}

// Refusal shows the latest refusal line, as the table shows it.
func (h *Hub) Refusal(line string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refusal = line
	h.broadcast("refusal", update{Now: h.now(), Refusal: line})
}

// End says watching has ended, and why, and lets every browser go.
func (h *Hub) End(why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ended = why
	h.broadcast("ended", update{Now: h.now(), Ended: why})
	for c := range h.clients {
		close(c)
		delete(h.clients, c)
	}
}

// broadcast queues a message for every browser; one that has fallen
// clientQueue messages behind is let go. Called with h.mu held.
func (h *Hub) broadcast(event string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs of strings and times: cannot fail
	}
	for c := range h.clients {
		select {
		case c <- message{event: event, data: b}:
		default:
			close(c)
			delete(h.clients, c)
		}
	}
}

// Snapshot is the whole page's state, as JSON.
func (h *Hub) Snapshot() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.snapshot()
}

// snapshot is Snapshot with h.mu held.
func (h *Hub) snapshot() []byte {
	s := snapshot{Title: h.title, Now: h.now(), Phases: report.Phases, Counts: h.counts, Refusal: h.refusal, Ended: h.ended}
	for _, name := range h.order {
		s.Nodes = append(s.Nodes, h.nodes[name])
	}
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // plain structs of strings and times: cannot fail
	}
	return b
}

// subscribe returns the snapshot and a channel of the changes after it:
// none once watching ended, and none and full when maxClients browsers
// are connected.
func (h *Hub) subscribe() (snap []byte, c chan message, full bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	snap = h.snapshot()
	switch {
	case h.ended != "":
		return snap, nil, false
	case len(h.clients) >= maxClients:
		return nil, nil, true
	}
	c = make(chan message, clientQueue)
	h.clients[c] = struct{}{}
	return snap, c, false
}

func (h *Hub) unsubscribe(c chan message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c]; ok {
		close(c)
		delete(h.clients, c)
	}
}
