package watchweb

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pibake/pibake/firstboot/status"
	"github.com/pibake/pibake/internal/report"
	"github.com/pibake/pibake/internal/testimage"
)

var screenshot = flag.String("screenshot", "", "also save the page's screenshot as this PNG (docs/watch-ui.png)")

var outKey = bytes.Repeat([]byte{0x5a}, 32)

// lab is a receiver fed by signed reports over loopback HTTP, and the
// loop pibake watch runs (report → fleet → page), serving the page.
type lab struct {
	fleet  *report.Fleet
	hub    *Hub
	page   *Server
	recv   *httptest.Server
	builds map[string]string
	mu     sync.Mutex // the fleet belongs to the loop; tests read it under mu
}

// newLab plans n nodes: srv-1 (a server) and agent-2 … agent-n.
func newLab(t *testing.T, n int) *lab {
	t.Helper()
	l := &lab{builds: map[string]string{}}
	var planned []report.Planned
	var nodes []report.Node
	for i := 1; i <= n; i++ {
		name, role := fmt.Sprintf("agent-%03d", i), "agent"
		if i == 1 {
			name, role = "srv-1", "server"
		}
		build := fmt.Sprintf("b%015d", i)
		l.builds[name] = build
		planned = append(planned, report.Planned{Hostname: name, Role: role, Batch: i / 50, Builds: []string{build}, Reports: true})
		nodes = append(nodes, report.Node{Hostname: name, Builds: []string{build}})
	}
	l.fleet = report.NewFleet(planned, nil)
	l.hub = NewHub("lab", l.fleet)
	events := make(chan report.Event, 64)
	recv := report.NewReceiver(outKey, nodes, func(e report.Event) { events <- e }, func(report.Refusal) {})
	l.recv = httptest.NewServer(recv)
	t.Cleanup(l.recv.Close)
	go func() {
		for e := range events {
			l.mu.Lock()
			n := l.fleet.Apply(e)
			l.hub.Node(n, l.fleet.Counts())
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(events) })
	var err error
	l.page, err = Listen("127.0.0.1:0", l.hub)
	if err != nil {
		t.Fatal(err)
	}
	go l.page.Serve()
	t.Cleanup(l.page.Close)
	return l
}

// report sends a signed report as a node's reporter does: a nonce, then
// the POST.
func (l *lab) report(t *testing.T, st status.Record) {
	t.Helper()
	if st.Build == "" {
		st.Build = l.builds[st.Node]
	}
	st.Version = 1
	resp, err := http.Get(l.recv.URL + report.NoncePath)
	if err != nil {
		t.Fatal(err)
	}
	nonce, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	status, _ := json.Marshal(st)
	body := []byte(`{"nonce":"` + string(nonce) + `","status":` + string(status) + `}`)
	req, _ := http.NewRequest(http.MethodPost, l.recv.URL+report.ReportPath, bytes.NewReader(body))
	req.Header.Set(report.SignatureHeader, report.Sign(report.NodeKey(outKey, st.Node, st.Build), body))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("report %+v: %s", st, resp.Status)
	}
}

// browser starts headless Chromium (Debian's chromium) with a fresh
// profile and nothing that reaches the network on its own.
func browser(t *testing.T) context.Context {
	t.Helper()
	exe := testimage.Tool(t, "chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // root in CI: Chromium refuses its sandbox
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 860),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	// The first Run starts the browser, for as long as ctx lives.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	return ctx
}

// js evaluates an expression in the page.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition in the page.
func waitFor(t *testing.T, ctx context.Context, cond string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(5*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("waiting for %s: %v", cond, err)
	}
}

const hostileReason = "<img src=x id=pwn> \x1b]0;owned\a\x1b[2J \u009b2J"

// TestPageInBrowser: 500 nodes fed by signed reports over HTTP, shown in
// headless Chromium: a tile each, counts per phase, a live update of one
// tile after a report (the time it took is logged), the filter, a node's
// timeline, and a hostile reason shown as escaped text, never as markup.
func TestPageInBrowser(t *testing.T) {
	l := newLab(t, 500)
	stages := []status.Record{
		{Stage: "activate", State: "running"},
		{Stage: "apt-update", State: "ok"},
		{Stage: "k3s-install", State: "running"},
		{Stage: "k3s-active", State: "ok"},
		{Stage: "registered", State: "ok"},
	}
	// Nodes 1-5 registered, 6-205 somewhere on the way, the rest silent.
	for i := 1; i <= 205; i++ {
		name := fmt.Sprintf("agent-%03d", i)
		if i == 1 {
			name = "srv-1"
		}
		last := 4
		if i > 5 {
			last = i % 4
		}
		for _, st := range stages[:last+1] {
			st.Node = name
			l.report(t, st)
		}
	}
	l.report(t, status.Record{Node: "agent-206", Stage: "cgroup", State: "failed", Reason: hostileReason, Final: true})
	// How agent-010 booted (issue 25): shown with its details.
	l.report(t, status.Record{Node: "agent-010", Stage: "bootloader", State: "ok", Facts: &status.Facts{
		Model: "Raspberry Pi 4 Model B Rev 1.5", Root: "sda2", Transport: "usb", USBID: "152d:0578", USBDriver: "uas",
		MemoryCgroup: true, BootOrder: "0xf41", BootOrderDefault: true, BootloaderSource: "rpi-eeprom-config"}})
	waitUntil(t, func() bool {
		return len(l.hub.Snapshot()) > 0 && strings.Contains(string(l.hub.Snapshot()), "agent-206") && l.counts()[report.PhaseStopped] == 1
	})

	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(l.page.URL())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelectorAll(".tile").length === 500 && document.getElementById("conn").dataset.state === "live"`)

	// Counts per phase, as the fleet counts them.
	counts := js[map[string]string](t, ctx, `Object.fromEntries([...document.querySelectorAll(".count")].map(b => [b.querySelector(".label").textContent.trim(), b.dataset.n]))`)
	for phase, n := range l.counts() {
		if counts[string(phase)] != fmt.Sprint(n) {
			t.Errorf("page counts %s %s; the fleet has %d (%v)", phase, counts[string(phase)], n, counts)
		}
	}
	if counts["registered"] != "5" || counts["not heard from"] != "294" {
		t.Errorf("counts %v; want 5 registered, 294 not heard from", counts)
	}

	// The hostile reason is text: escaped as the table shows it, no
	// element made of it.
	if n := js[int](t, ctx, `document.querySelectorAll("img, #pwn").length`); n != 0 {
		t.Errorf("a node's reason made %d elements", n)
	}
	title := js[string](t, ctx, `document.querySelector('.tile[data-node="agent-206"]').title`)
	if want := `<img src=x id=pwn> \x1b]0;owned\a\x1b[2J \u009b2J`; !strings.Contains(title, want) || strings.ContainsAny(title, "\x1b\a\u009b") {
		t.Errorf("agent-206's tile says %q; want the escaped reason %q", title, want)
	}

	// The Content-Security-Policy holds: a script put into the page
	// (as a node string would be, were it ever markup) does not run.
	if ran := js[bool](t, ctx, `(() => { const s = document.createElement("script"); s.textContent = "window.pwned = true"; document.body.append(s); return window.pwned === true; })()`); ran {
		t.Error("an inline script ran: the page's Content-Security-Policy does not hold")
	}

	// A live update: agent-300 reports; its tile changes.
	tile := `document.querySelector('.tile[data-node="agent-300"]')`
	if got := js[string](t, ctx, tile+`.dataset.phase`); got != "silent" {
		t.Fatalf("agent-300's tile is %q before it reported; want silent", got)
	}
	start := time.Now()
	l.report(t, status.Record{Node: "agent-300", Stage: "k3s-install", State: "running"})
	waitFor(t, ctx, tile+`.dataset.phase === "k3sinstall"`)
	t.Logf("report to tile update: %s (500 nodes; the report's own round trip included)", time.Since(start))
	if got := js[string](t, ctx, tile+`.querySelector(".stage").textContent`); got != "k3s-install running" {
		t.Errorf("agent-300's tile says %q", got)
	}

	// The filter, and a node's timeline.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#filter"), "agent-01")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `[...document.querySelectorAll(".tile")].filter(e => !e.hidden).length === 10`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`.tile[data-node="agent-010"]`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `!document.getElementById("detail").hidden`)
	steps := js[[]string](t, ctx, `[...document.querySelectorAll("#d-timeline li span")].map(e => e.textContent)`)
	if got := strings.Join(steps, ","); got != "activate running,apt-update ok,k3s-install running,bootloader ok" {
		t.Errorf("agent-010's timeline: %s", got)
	}
	booted := js[[]string](t, ctx, `[document.getElementById("d-booted").textContent, document.getElementById("d-bootloader").textContent]`)
	if booted[0] != "root sda2 on usb (152d:0578, uas); memory cgroup present; Raspberry Pi 4 Model B Rev 1.5" ||
		booted[1] != "BOOT_ORDER 0xf41 (not set: the default); read with rpi-eeprom-config" {
		t.Errorf("agent-010's details say booted %q, bootloader %q", booted[0], booted[1])
	}

	// A screenshot with something on it.
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	checkNotBlank(t, buf)
}

// TestScreenshotForDocs: a fleet of 24 coming up, as docs/watch-ui.png
// shows it (saved with -screenshot PATH); the screenshot is checked not
// blank either way.
func TestScreenshotForDocs(t *testing.T) {
	l := newLab(t, 24)
	plan := map[int][]status.Record{}
	for i := 1; i <= 24; i++ {
		switch {
		case i <= 6:
			plan[i] = []status.Record{{Stage: "activate", State: "ok"}, {Stage: "k3s-active", State: "ok"}, {Stage: "registered", State: "ok", Reason: "the API answers and lists the node"}}
		case i <= 10:
			plan[i] = []status.Record{{Stage: "activate", State: "ok"}, {Stage: "k3s-install", State: "running"}}
		case i <= 13:
			plan[i] = []status.Record{{Stage: "activate", State: "ok"}, {Stage: "k3s-active", State: "ok"}, {Stage: "registered", State: "waiting", Reason: "the kubelet does not answer yet"}}
		case i <= 17:
			plan[i] = []status.Record{{Stage: "activate", State: "ok"}, {Stage: "apt-update", State: "running"}}
		case i == 18:
			plan[i] = []status.Record{{Stage: "activate", State: "running"}}
		case i == 19:
			plan[i] = []status.Record{{Stage: "activate", State: "ok"}, {Stage: "k3s-install", State: "failed", Reason: "the install script exited 1; retrying in 30s"}}
		case i == 20:
			plan[i] = []status.Record{{Stage: "activate", State: "ok"}, {Stage: "cgroup", State: "failed", Reason: "the memory cgroup is not enabled, so k3s cannot run", Final: true}}
		}
	}
	for i := 1; i <= 24; i++ {
		name := fmt.Sprintf("agent-%03d", i)
		if i == 1 {
			name = "srv-1"
		}
		for _, st := range plan[i] {
			st.Node = name
			l.report(t, st)
		}
	}
	l.report(t, status.Record{Node: "agent-021", Build: "b0000000000000ff", Stage: "k3s-install", State: "running"})
	waitUntil(t, func() bool { return l.counts()[report.PhaseOlderBuild] == 1 })

	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1100, 560), chromedp.Navigate(l.page.URL())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelectorAll(".tile").length === 24 && document.getElementById("conn").dataset.state === "live"`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`.tile[data-node="agent-019"]`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `!document.getElementById("detail").hidden`)
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	checkNotBlank(t, buf)
	if *screenshot != "" {
		if len(buf) > 200<<10 {
			t.Fatalf("the screenshot is %d KiB; docs want under 200", len(buf)>>10)
		}
		if err := os.WriteFile(*screenshot, buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkNotBlank decodes a PNG and wants colour: many distinct colours,
// and the phases' tile colours among them.
func checkNotBlank(t *testing.T, b []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	seen := map[[3]uint32]bool{}
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y += 2 {
		for x := r.Min.X; x < r.Max.X; x += 2 {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			seen[[3]uint32{cr >> 8, cg >> 8, cb >> 8}] = true
		}
	}
	green := seen[[3]uint32{0x1f, 0x9d, 0x55}] // --registered
	if len(seen) < 50 || !green || r.Dx() < 800 || r.Dy() < 400 {
		t.Errorf("screenshot %v has %d colours (registered green: %v): blank or unstyled", r.Size(), len(seen), green)
	}
}

func (l *lab) counts() map[report.Phase]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fleet.Counts()
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for range 2000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the reports did not reach the fleet")
}
