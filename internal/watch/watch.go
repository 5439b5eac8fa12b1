// Package watch runs pibake watch: the fleet a recipe and its output
// directory make, the receiver of the nodes' reports, the terminal display
// and the live page, until every awaited node has registered or stopped.
package watch

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/report"
	"github.com/pibake/pibake/internal/watchterm"
	"github.com/pibake/pibake/internal/watchweb"
	"github.com/pibake/pibake/recipes"
)

// DefaultPort is where pibake watch listens when the report URL names no
// port.
const DefaultPort = "8470"

// defaultListen is every interface at the port of the cluster's report
// URL (else the first node's), where the nodes will post.
func DefaultListen(r *recipes.Recipe) string {
	raw := r.Cluster.ReportURL
	for _, n := range r.Nodes {
		if raw == "" {
			raw = n.ReportURL
		}
	}
	port := DefaultPort
	if u, err := url.Parse(raw); err == nil && u.Scheme == "http" && u.Port() != "" {
		port = u.Port()
	}
	return ":" + port
}

// Session is one run of pibake watch.
type Session struct {
	recipe string
	outDir string
	target outdir.WatchTarget
	fleet  *report.Fleet
	ui     *watchweb.Server // nil without ServeUI
}

// ServeUI also serves the live page of the fleet at addr; it prints the
// page's URL on stderr and serves it until close is called.
func (w *Session) ServeUI(addr, cluster string, stderr io.Writer) (close func(), err error) {
	w.ui, err = watchweb.Listen(addr, watchweb.NewHub(cluster, w.fleet))
	if err != nil {
		return nil, err
	}
	go w.ui.Serve()
	fmt.Fprintf(stderr, "pibake watch: the fleet's page is at %s\n", w.ui.URL())
	return func() { w.ui.Close() }, nil
}

// New prepares watching the reports of r's nodes, built or flashed in
// outDir (default: the recipe's output.dir, else ./out), waiting for the
// nodes names gives (hostnames or node block labels; none: every node
// that reports). It refuses what cannot work before anything listens.
func New(r *recipes.Recipe, outDir string, names []string) (*Session, error) {
	if outDir == "" {
		outDir = r.Output.Dir
	}
	if outDir == "" {
		outDir = "out"
	}
	var planned []report.Planned
	reporting := 0
	for _, n := range r.Nodes {
		planned = append(planned, report.Planned{Hostname: n.Hostname, Role: string(n.Role), Batch: n.JoinBatch, Reports: n.ReportURL != ""})
		if n.ReportURL != "" {
			reporting++
		}
	}
	if reporting == 0 {
		return nil, fmt.Errorf("no node of %s reports its first boot: add cluster { report { url = \"http://<this machine>:%s\" } } to the recipe, build, and flash again", r.Path, DefaultPort)
	}
	await, err := awaited(r, names)
	if err != nil {
		return nil, err
	}
	target, err := outdir.ReadWatchTarget(outDir)
	if err != nil {
		return nil, err
	}
	for i := range planned {
		planned[i].Builds = target.Builds[planned[i].Hostname]
	}
	fleet := report.NewFleet(planned, await)
	var unbuilt []string
	for _, n := range fleet.Nodes() {
		if n.Awaited && len(n.Builds) == 0 {
			unbuilt = append(unbuilt, n.Hostname)
		}
	}
	if len(unbuilt) > 0 {
		return nil, fmt.Errorf("neither built nor flashed from %s: %s, so nothing can report for them; build or flash them there, or name the nodes to wait for with --node", outDir, strings.Join(unbuilt, ", "))
	}
	return &Session{recipe: r.Path, outDir: outDir, target: target, fleet: fleet}, nil
}

// awaited resolves --node: hostnames or node block labels, each of a node
// that reports.
func awaited(r *recipes.Recipe, names []string) ([]string, error) {
	var out []string
	for _, name := range names {
		found := false
		for _, n := range r.Nodes {
			if !strings.EqualFold(name, n.Hostname) && !strings.EqualFold(name, n.Group) {
				continue
			}
			found = true
			if n.ReportURL == "" {
				return nil, fmt.Errorf("--node %s: node %s has no report URL, so it never reports; give it one (cluster or node report block), build and flash again", name, n.Hostname)
			}
			out = append(out, n.Hostname)
		}
		if !found {
			return nil, fmt.Errorf("--node %s: no such node or node block in %s", name, r.Path)
		}
	}
	return out, nil
}

// receive serves the nodes' reports on ln until stop is called. No
// accepted report is dropped (a lost "registered" would keep watch
// waiting): each waits for the loop to take it from events, until stop.
// Refusals never wait: they are counted (watchterm.Refusals).
func (w *Session) receive(ln net.Listener) (events <-chan report.Event, refusals *watchterm.Refusals, stop func()) {
	ch := make(chan report.Event, 256)
	done := make(chan struct{})
	var nodes []report.Node
	for _, n := range w.fleet.Nodes() {
		nodes = append(nodes, report.Node{Hostname: n.Hostname, Builds: n.Builds})
	}
	refusals = watchterm.NewRefusals()
	recv := report.NewReceiver(w.target.Key, nodes,
		func(e report.Event) {
			select {
			case ch <- e:
			case <-done:
			}
		},
		refusals.Add)
	srv := &http.Server{Handler: recv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10}
	go srv.Serve(ln)
	return ch, refusals, func() { close(done); srv.Close() }
}

// Outcome is how watching ended.
type Outcome int

// Outcomes.
const (
	// Registered: every awaited node registered.
	Registered Outcome = iota
	// NotRegistered: a node stopped for good or never registered before
	// the timeout.
	NotRegistered
	// Interrupted: the context ended (Ctrl-C).
	Interrupted
)

// Run shows the reports received on ln, on stdout in mode (progress and
// the final list on stderr), until every awaited node has registered or
// stopped, the timeout, or ctx ends.
func (w *Session) Run(ctx context.Context, ln net.Listener, timeout time.Duration, mode watchterm.Mode, stdout, stderr io.Writer) Outcome {
	events, refusals, stop := w.receive(ln)
	defer stop()
	names := []string{}
	for _, n := range w.fleet.Unregistered() {
		names = append(names, n.Hostname)
	}
	fmt.Fprintf(stderr, "pibake watch: listening on %s for the first-boot reports of %s (out directory %s); waiting for %s\n",
		ln.Addr(), w.recipe, w.outDir, strings.Join(names, ", "))

	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	d := watchterm.New(mode, stdout, w.fleet, os.Getenv("NO_COLOR") == "")
	d.Redraw()
	finish := func(why string) Outcome {
		w.showRefusals(d, refusals, true)
		d.Finish(stderr, why)
		w.ended(why)
		if _, registered := w.fleet.Done(); !registered || why != "" {
			return NotRegistered
		}
		return Registered
	}
	for {
		if done, _ := w.fleet.Done(); done {
			return finish("")
		}
		select {
		case e := <-events:
			n := w.fleet.Apply(e)
			d.Event(e, n)
			if w.ui != nil {
				w.ui.Hub().Node(n, w.fleet.Counts())
			}
		case <-refusals.Ready():
			w.showRefusals(d, refusals, false)
		case <-tick.C:
			w.showRefusals(d, refusals, false)
			d.Redraw()
		case <-deadline:
			return finish(fmt.Sprintf("timed out after %s", timeout))
		case <-ctx.Done():
			finish("interrupted")
			return Interrupted
		}
	}
}

// showRefusals shows the refusals due: each address's first on its own,
// the rest counted per minute (all: every count so far); the page shows
// the latest line, as the table does.
func (w *Session) showRefusals(d *watchterm.Display, rs *watchterm.Refusals, all bool) {
	shown, sums := rs.Take(time.Now(), all)
	for _, r := range shown {
		d.Refused(r)
	}
	for _, s := range sums {
		d.Summarised(s)
	}
	if w.ui != nil && len(shown)+len(sums) > 0 {
		w.ui.Hub().Refusal(d.LatestRefusal())
	}
}

// ended tells the page why watching ended.
func (w *Session) ended(why string) {
	if w.ui == nil {
		return
	}
	if why == "" {
		why = "every awaited node registered or stopped"
		if _, registered := w.fleet.Done(); registered {
			why = "every awaited node registered"
		}
	}
	w.ui.Hub().End(why)
}
