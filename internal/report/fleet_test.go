package report

import (
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/firstboot/status"
)

func ev(node, build, stage, state string, final, older bool) Event {
	return Event{Received: time.Now(), OlderBuild: older, Status: status.Record{Version: 1, Node: node, Build: build, Stage: stage, State: state, Final: final}}
}

// TestFleetDone: watching ends when every awaited node registered (exit
// 0) or registered or stopped for good (exit 1), and not before.
func TestFleetDone(t *testing.T) {
	planned := []Planned{
		{Hostname: "srv", Role: "server", Builds: []string{"s1"}, Reports: true},
		{Hostname: "a1", Role: "agent", Builds: []string{"x1"}, Reports: true},
		{Hostname: "quiet", Role: "agent", Builds: []string{"q1"}}, // no report URL: never awaited by default
	}
	tests := []struct {
		name             string
		await            []string
		events           []Event
		done, registered bool
		problem          string // of the first unregistered node
	}{
		{name: "nothing heard", done: false, problem: "not heard from"},
		{name: "both registered", events: []Event{ev("srv", "s1", "registered", "ok", false, false), ev("a1", "x1", "registered", "ok", false, false)},
			done: true, registered: true},
		{name: "registered then more stages", events: []Event{ev("srv", "s1", "registered", "ok", false, false), ev("srv", "s1", "packages", "failed", false, false), ev("a1", "x1", "registered", "ok", false, false)},
			done: true, registered: true},
		{name: "one still installing", events: []Event{ev("srv", "s1", "registered", "ok", false, false), ev("a1", "x1", "k3s-install", "running", false, false)},
			done: false, problem: "at k3s-install (running)"},
		{name: "retried failure is not the end", events: []Event{ev("srv", "s1", "registered", "ok", false, false), ev("a1", "x1", "k3s-install", "failed", false, false)},
			done: false, problem: "failed at k3s-install"},
		{name: "final failure ends it", events: []Event{ev("srv", "s1", "registered", "ok", false, false), ev("a1", "x1", "cgroup", "failed", true, false)},
			done: true, problem: "failed at cgroup"},
		{name: "done without registering: the reporter goes on checking", events: []Event{ev("srv", "s1", "registered", "ok", false, false), ev("a1", "x1", "done", "ok", false, false)},
			done: false, problem: "k3s not registered yet"},
		{name: "registered after the first boot", events: []Event{ev("srv", "s1", "registered", "ok", false, false), ev("a1", "x1", "done", "ok", false, false), ev("a1", "x1", "registered", "ok", false, false)},
			done: true, registered: true},
		{name: "the reporter gave up on registration", events: []Event{ev("srv", "s1", "registered", "ok", false, false), ev("a1", "x1", "done", "ok", false, false), ev("a1", "x1", "registered", "waiting", true, false)},
			done: true, problem: "at registered (waiting)"},
		{name: "an older build's registration does not count", events: []Event{ev("srv", "s1", "registered", "ok", false, false), ev("a1", "x0", "registered", "ok", false, true)},
			done: false, problem: "older build"},
		{name: "only the awaited node counts", await: []string{"srv"}, events: []Event{ev("srv", "s1", "registered", "ok", false, false)},
			done: true, registered: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFleet(planned, tt.await)
			for _, e := range tt.events {
				if f.Apply(e) == nil {
					t.Fatalf("Apply(%s) found no node", e.Status.Node)
				}
			}
			done, registered := f.Done()
			if done != tt.done || registered != tt.registered {
				t.Errorf("Done() = %v, %v; want %v, %v", done, registered, tt.done, tt.registered)
			}
			if un := f.Unregistered(); tt.problem != "" && (len(un) == 0 || !strings.Contains(un[0].Problem(), tt.problem)) {
				t.Errorf("unregistered %v; want the first with problem %q", un, tt.problem)
			}
			for _, n := range f.Nodes() {
				if n.Hostname == "quiet" && n.Awaited {
					t.Errorf("quiet (no report URL) awaited = %v", n.Awaited)
				}
			}
		})
	}
}
