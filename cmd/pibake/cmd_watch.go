package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/internal/report"
	"github.com/pibake/pibake/internal/watchterm"
	"github.com/pibake/pibake/internal/watchweb"
	"github.com/pibake/pibake/recipes"
	"github.com/spf13/pflag"
)

// defaultWatchPort is where pibake watch listens when the report URL names
// no port.
const defaultWatchPort = "8470"

// watchOptions are pibake watch's flags.
type watchOptions struct {
	out, listen, ui string
	timeout         time.Duration
	json            bool
	nodes           []string
}

func (o *watchOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.out, "out", "o", "", "output directory the images were built in; its report key checks every report (default: the recipe's output.dir, else ./out)")
	fs.StringVar(&o.listen, "listen", "", "address to listen on (default: every interface, at the port of the recipe's report URL, else "+defaultWatchPort+")")
	fs.DurationVar(&o.timeout, "timeout", 0, "give up after this long, e.g. 30m (default: wait until every awaited node has registered or stopped)")
	fs.BoolVar(&o.json, "json", false, "print every event as one JSON line")
	fs.StringVar(&o.ui, "ui", "", "also serve a live page of the fleet at this address, e.g. 127.0.0.1:"+watchweb.DefaultPort+" (no host: loopback; any other address gets a URL with an access token, printed once)")
	fs.StringArrayVar(&o.nodes, "node", nil, "wait for this node, or every node of this node block's label (repeatable; default: every node that reports)")
}

var watchCommand = command{
	summary: "receive the nodes' first-boot reports and show the fleet coming up",
	usage:   "RECIPE",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		var opts watchOptions
		opts.addFlags(fs)
		return func(ctx context.Context, args []string, o outputs) int { return runWatch(ctx, opts, args, o) }
	},
}

// runWatch is pibake watch: receive the reports of the recipe's nodes and
// show them until every awaited node has registered or stopped.
func runWatch(ctx context.Context, opts watchOptions, args []string, o outputs) int {
	if len(args) != 1 {
		return usageError(o, "watch", "want exactly one recipe (a .hcl file or a directory of them), got %d arguments", len(args))
	}
	if opts.timeout < 0 {
		return usageError(o, "watch", "--timeout is %s; it must be positive", opts.timeout)
	}
	r, _ := loadRecipe(o, args[0])
	if r == nil {
		return exitFailure
	}
	w, err := newWatch(r, opts.out, opts.nodes)
	if err != nil {
		fmt.Fprintf(o.stderr, "pibake watch: %v\n", err)
		return exitFailure
	}
	addr := opts.listen
	if addr == "" {
		addr = defaultListen(r)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(o.stderr, "pibake watch: %v; is another pibake watch running? Pick another address with --listen (the nodes post to the recipe's report URL)\n", err)
		return exitFailure
	}
	defer ln.Close()
	if opts.ui != "" {
		w.ui, err = watchweb.Listen(opts.ui, watchweb.NewHub(r.Cluster.Name, w.fleet))
		if err != nil {
			fmt.Fprintf(o.stderr, "pibake watch: %v; pick another address for the page\n", err)
			return exitFailure
		}
		go w.ui.Serve()
		defer w.ui.Close()
		fmt.Fprintf(o.stderr, "pibake watch: the fleet's page is at %s\n", w.ui.URL())
	}
	mode := watchterm.Lines
	switch {
	case opts.json:
		mode = watchterm.JSON
	case isTerminal(o.stdout):
		mode = watchterm.Table
	}
	return w.run(ctx, ln, opts.timeout, mode, o)
}

// defaultListen is every interface at the port of the cluster's report
// URL (else the first node's), where the nodes will post.
func defaultListen(r *recipes.Recipe) string {
	raw := r.Cluster.ReportURL
	for _, n := range r.Nodes {
		if raw == "" {
			raw = n.ReportURL
		}
	}
	port := defaultWatchPort
	if u, err := url.Parse(raw); err == nil && u.Scheme == "http" && u.Port() != "" {
		port = u.Port()
	}
	return ":" + port
}

// watch is one run of pibake watch.
type watch struct {
	recipe string
	outDir string
	target builder.WatchTarget
	fleet  *report.Fleet
	ui     *watchweb.Server // nil without --ui
}

func newWatch(r *recipes.Recipe, outDir string, names []string) (*watch, error) {
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
		return nil, fmt.Errorf("no node of %s reports its first boot: add cluster { report { url = \"http://<this machine>:%s\" } } to the recipe, build, and flash again", r.Path, defaultWatchPort)
	}
	await, err := awaited(r, names)
	if err != nil {
		return nil, err
	}
	target, err := builder.ReadWatchTarget(outDir)
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
	return &watch{recipe: r.Path, outDir: outDir, target: target, fleet: fleet}, nil
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
func (w *watch) receive(ln net.Listener) (events <-chan report.Event, refusals *watchterm.Refusals, stop func()) {
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

// run shows the reports until every awaited node has registered or
// stopped, the timeout, or ctx ends, and returns the exit status.
func (w *watch) run(ctx context.Context, ln net.Listener, timeout time.Duration, mode watchterm.Mode, o outputs) int {
	events, refusals, stop := w.receive(ln)
	defer stop()
	names := []string{}
	for _, n := range w.fleet.Unregistered() {
		names = append(names, n.Hostname)
	}
	fmt.Fprintf(o.stderr, "pibake watch: listening on %s for the first-boot reports of %s (out directory %s); waiting for %s\n",
		ln.Addr(), w.recipe, w.outDir, strings.Join(names, ", "))

	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	d := watchterm.New(mode, o.stdout, w.fleet, os.Getenv("NO_COLOR") == "")
	d.Redraw()
	finish := func(why string) int {
		w.showRefusals(d, refusals, true)
		d.Finish(o.stderr, why)
		w.ended(why)
		if _, registered := w.fleet.Done(); !registered || why != "" {
			return exitFailure
		}
		return exitOK
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
			return exitInterrupted
		}
	}
}

// showRefusals shows the refusals due: each address's first on its own,
// the rest counted per minute (all: every count so far); the page shows
// the latest line, as the table does.
func (w *watch) showRefusals(d *watchterm.Display, rs *watchterm.Refusals, all bool) {
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
func (w *watch) ended(why string) {
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
