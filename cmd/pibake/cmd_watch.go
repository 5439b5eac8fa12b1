package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/firstboot/status"
	"github.com/pibake/pibake/internal/report"
	"github.com/pibake/pibake/recipes"
	"github.com/spf13/pflag"
)

// defaultWatchPort is where pibake watch listens when the report URL names
// no port.
const defaultWatchPort = "8470"

var watchCommand = command{
	summary: "receive the nodes' first-boot reports and show the fleet coming up",
	usage:   "RECIPE",
	flags: func(fs *pflag.FlagSet) func(context.Context, []string, outputs) int {
		outDir := fs.StringP("out", "o", "", "output directory the images were built in; its report key checks every report (default: the recipe's output.dir, else ./out)")
		listen := fs.String("listen", "", "address to listen on (default: every interface, at the port of the recipe's report URL, else "+defaultWatchPort+")")
		timeout := fs.Duration("timeout", 0, "give up after this long, e.g. 30m (default: wait until every awaited node has registered or stopped)")
		asJSON := fs.Bool("json", false, "print every event as one JSON line")
		nodes := fs.StringArray("node", nil, "wait for this node, or every node of this node block's label (repeatable; default: every node that reports)")
		return func(ctx context.Context, args []string, o outputs) int {
			if len(args) != 1 {
				return usageError(o, "watch", "want exactly one recipe (a .hcl file or a directory of them), got %d arguments", len(args))
			}
			if *timeout < 0 {
				return usageError(o, "watch", "--timeout is %s; it must be positive", *timeout)
			}
			r, _ := loadRecipe(o, args[0])
			if r == nil {
				return exitFailure
			}
			w, err := newWatch(r, *outDir, *nodes)
			if err != nil {
				fmt.Fprintf(o.stderr, "pibake watch: %v\n", err)
				return exitFailure
			}
			addr := *listen
			if addr == "" {
				addr = defaultListen(r)
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				fmt.Fprintf(o.stderr, "pibake watch: %v; is another pibake watch running? Pick another address with --listen (the nodes post to the recipe's report URL)\n", err)
				return exitFailure
			}
			mode := watchLines
			switch {
			case *asJSON:
				mode = watchJSON
			case isTerminal(o.stdout):
				mode = watchTable
			}
			return w.run(ctx, ln, *timeout, mode, o)
		}
	},
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

type watchMode int

const (
	watchLines watchMode = iota // one line per event
	watchTable                  // a table redrawn in place, on a terminal
	watchJSON                   // one JSON object per event
)

// watch is one run of pibake watch.
type watch struct {
	recipe string
	outDir string
	target outdir.WatchTarget
	fleet  *report.Fleet
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

// watchEvent is what the receiver hands the display loop.
type watchEvent struct {
	event   *report.Event
	refusal *report.Refusal
}

func (w *watch) run(ctx context.Context, ln net.Listener, timeout time.Duration, mode watchMode, o outputs) int {
	events := make(chan watchEvent, 256)
	var nodes []report.Node
	for _, n := range w.fleet.Nodes() {
		nodes = append(nodes, report.Node{Hostname: n.Hostname, Builds: n.Builds})
	}
	// No event is dropped (a lost "registered" would keep watch waiting);
	// once watching ends, the handlers stop waiting for the display.
	stop := make(chan struct{})
	defer close(stop)
	send := func(ev watchEvent) {
		select {
		case events <- ev:
		case <-stop:
		}
	}
	recv := report.NewReceiver(w.target.Key, nodes,
		func(e report.Event) { send(watchEvent{event: &e}) },
		func(r report.Refusal) { send(watchEvent{refusal: &r}) })
	srv := &http.Server{Handler: recv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	await := w.fleet.Unregistered()
	names := make([]string, len(await))
	for i, n := range await {
		names[i] = n.Hostname
	}
	fmt.Fprintf(o.stderr, "pibake watch: listening on %s for the first-boot reports of %s (out directory %s); waiting for %s\n",
		ln.Addr(), w.recipe, w.outDir, strings.Join(names, ", "))

	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	var tick <-chan time.Time
	if mode == watchTable {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	d := display{mode: mode, o: o, fleet: w.fleet, colour: os.Getenv("NO_COLOR") == ""}
	d.redraw()
	for {
		if done, _ := w.fleet.Done(); done {
			return d.finish("")
		}
		select {
		case ev := <-events:
			if ev.event != nil {
				n := w.fleet.Apply(*ev.event)
				d.event(*ev.event, n)
			} else {
				d.refused(*ev.refusal)
			}
		case <-tick:
			d.redraw()
		case <-deadline:
			return d.finish(fmt.Sprintf("timed out after %s", timeout))
		case <-ctx.Done():
			d.finish("interrupted")
			return exitInterrupted
		}
	}
}

// display shows the fleet: a table redrawn in place, lines, or JSON lines.
type display struct {
	mode    watchMode
	o       outputs
	fleet   *report.Fleet
	colour  bool   // on a terminal, unless NO_COLOR is set
	refusal string // the latest refusal, for the table
	drawn   int    // lines of the table on screen
}

const (
	ansiReset  = "\x1b[0m"
	ansiGreen  = "\x1b[32m"
	ansiRed    = "\x1b[31m"
	ansiYellow = "\x1b[33m"
)

func (d *display) event(e report.Event, n *report.NodeState) {
	switch d.mode {
	case watchJSON:
		d.json(map[string]any{"event": "report", "received": e.Received.UTC().Format(time.RFC3339), "remote": e.Remote,
			"node": e.Status.Node, "role": n.Role, "batch": n.Batch, "older_build": e.OlderBuild, "registered": n.Registered, "status": e.Status})
	case watchLines:
		older := ""
		if e.OlderBuild {
			older = fmt.Sprintf(" (older build %s, not this directory's image)", e.Status.Build)
		}
		fmt.Fprintf(d.o.stdout, "%s %s %s: %s %s%s%s\n", e.Received.Format(time.TimeOnly), e.Status.Node, n.Role,
			e.Status.Stage, e.Status.State, reasonSuffix(e.Status.Reason), older)
	case watchTable:
		d.redraw()
	}
}

func (d *display) refused(r report.Refusal) {
	switch d.mode {
	case watchJSON:
		d.json(map[string]any{"event": "refused", "received": r.Received.UTC().Format(time.RFC3339), "remote": r.Remote,
			"node": r.Node, "http_status": r.Status, "reason": r.Reason})
	case watchLines:
		fmt.Fprintf(d.o.stdout, "%s refused a report from %s%s: %s\n", r.Received.Format(time.TimeOnly), r.Remote, claims(r.Node), r.Reason)
	case watchTable:
		d.refusal = fmt.Sprintf("%s refused a report from %s%s: %s", r.Received.Format(time.TimeOnly), r.Remote, claims(r.Node), r.Reason)
		d.redraw()
	}
}

// claims names the node a refused report claimed to be from: anyone on
// the network can send one, so the name is quoted (escapes and all) and
// cut short before it reaches a terminal.
func claims(node string) string {
	if node == "" {
		return ""
	}
	return fmt.Sprintf(" (claiming to be %q)", cut(node, 64))
}

// cut shortens s to at most n runes, marking the cut.
func cut(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-3]) + "..."
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}

func (d *display) json(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain maps and strings: cannot fail
	}
	fmt.Fprintf(d.o.stdout, "%s\n", b)
}

// redraw draws the table over the previous one (terminal only).
func (d *display) redraw() {
	if d.mode != watchTable {
		return
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tBATCH\tSTAGE\tSTATE\tSINCE\tDETAIL")
	now := time.Now()
	for _, n := range d.fleet.Nodes() {
		stage, state, since, detail := "-", "not heard from", "-", ""
		if n.Last != nil {
			stage, state, detail = n.Last.Stage, n.Last.State, n.Last.Reason
			since = now.Sub(n.Since).Truncate(time.Second).String() + " ago"
		}
		switch {
		case !n.Reports:
			state = "does not report"
		case len(n.Builds) == 0:
			state = "not built"
		case n.Last == nil && n.Older != nil:
			stage, state, detail = n.Older.Stage, n.Older.State, "older build "+n.Older.Build+": not this directory's image"
		}
		if n.Registered {
			state = "registered"
		}
		batch := "-"
		if n.Role == string(recipes.RoleAgent) {
			batch = fmt.Sprint(n.Batch)
		}
		detail = cut(detail, 60)
		if d.colour {
			state = colour(n, state)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Hostname, n.Role, batch, stage, state, since, detail)
	}
	tw.Flush()
	if d.refusal != "" {
		b.WriteString("\n" + d.refusal + "\n")
	}
	out := b.String()
	if d.drawn > 0 {
		fmt.Fprintf(d.o.stdout, "\x1b[%dA\x1b[J", d.drawn) // back to the table's first line, clear below
	}
	io.WriteString(d.o.stdout, out)
	d.drawn = strings.Count(out, "\n")
}

// colour marks a state on a terminal: green registered, red failed,
// yellow waiting. Every state gets escapes of the same length, so
// tabwriter's column widths stay right.
func colour(n *report.NodeState, state string) string {
	c := ""
	switch {
	case n.Registered:
		c = ansiGreen
	case state == status.StateFailed:
		c = ansiRed
	case state == status.StateWaiting:
		c = ansiYellow
	default:
		return "\x1b[0m" + state + ansiReset // same width of escapes as the coloured ones
	}
	return c + state + ansiReset
}

// finish prints the summary and returns the exit status: 0 when every
// awaited node registered. why says why watching stopped early.
func (d *display) finish(why string) int {
	d.redraw()
	_, registered := d.fleet.Done()
	missing := d.fleet.Unregistered()
	code := exitOK
	if !registered || why != "" {
		code = exitFailure
	}
	if d.mode == watchJSON {
		var list []map[string]string
		for _, n := range missing {
			list = append(list, map[string]string{"node": n.Hostname, "problem": n.Problem()})
		}
		d.json(map[string]any{"event": "summary", "stopped": why, "registered": registered && why == "", "missing": list})
		return code
	}
	switch {
	case len(missing) == 0 && why == "":
		fmt.Fprintf(d.o.stderr, "pibake watch: every awaited node registered\n")
	default:
		if why == "" {
			why = "every awaited node has registered or stopped"
		}
		fmt.Fprintf(d.o.stderr, "pibake watch: %s; %d of the awaited nodes did not register:\n", why, len(missing))
		for _, n := range missing {
			fmt.Fprintf(d.o.stderr, "  %s: %s\n", n.Hostname, n.Problem())
		}
	}
	return code
}
