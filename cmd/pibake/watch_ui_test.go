package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/firstboot/status"
	"github.com/pibake/pibake/internal/report"
	"github.com/pibake/pibake/internal/safetext"
	"github.com/pibake/pibake/internal/testimage"
)

// send posts a record as node host's reporter does, signed with the key
// its image holds (from the out directory's report key and the node's
// build), and returns the HTTP status.
func (l *watchLab) send(t *testing.T, st status.Record) int {
	t.Helper()
	target, err := outdir.ReadWatchTarget(l.out)
	if err != nil {
		t.Fatal(err)
	}
	st.Version = 1
	if st.Build == "" {
		st.Build = target.Builds[st.Node][0]
	}
	resp, err := http.Get("http://" + l.addr + report.NoncePath)
	if err != nil {
		t.Fatal(err)
	}
	nonce, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	status, _ := json.Marshal(st)
	body := []byte(`{"nonce":"` + string(nonce) + `","status":` + string(status) + `}`)
	req, _ := http.NewRequest(http.MethodPost, "http://"+l.addr+report.ReportPath, bytes.NewReader(body))
	req.Header.Set(report.SignatureHeader, report.Sign(report.NodeKey(target.Key, st.Node, st.Build), body))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// hostileReason is what a card's key, read off its FAT partition before
// activation, lets anyone sign: terminal escapes to retitle the window,
// clear the screen and rewrite the line above, as C0 and as C1.
const hostileReason = "\x1b]0;owned\a\x1b[2J\x1b[1A\x1b[2Kregistered ok \u009b2J \x7f <b>bold</b>"

// flood sends what a stranger on the LAN would, n requests from 4
// workers: nonce requests, forged reports, oversized and malformed
// bodies, and claims of a 60 KB escape-laden name.
func flood(t *testing.T, addr string, n int) {
	t.Helper()
	name, _ := json.Marshal(strings.Repeat("\x1b]0;owned\a", 5000))
	named := []byte(`{"nonce":"00","status":{"version":1,"node":` + string(name) + `,"stage":"done","state":"ok"}}`)
	forged := []byte(`{"nonce":"00","status":{"version":1,"node":"srv","build":"x","stage":"registered","state":"ok"}}`)
	bodies := [][]byte{nil, forged, bytes.Repeat([]byte("x"), 70<<10), []byte(`{"nonce":` + "\x1b[2J"), named}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				var req *http.Request
				if b := bodies[i%len(bodies)]; b == nil {
					req, _ = http.NewRequest(http.MethodGet, "http://"+addr+report.NoncePath, nil)
				} else {
					req, _ = http.NewRequest(http.MethodPost, "http://"+addr+report.ReportPath, bytes.NewReader(b))
					req.Header.Set(report.SignatureHeader, report.Sign([]byte("stranger"), b))
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Errorf("flood: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
}

// TestWatchUnderFloodShowsNothingRaw: a real pibake watch, as lines and
// as JSON, flooded by a stranger while the node's signed reports, whose
// reason is hostile, arrive: they are accepted and shown, escaped; the
// refusals are summarised, not one line each; nothing raw reaches
// stdout or stderr, and every JSON line is JSON.
func TestWatchUnderFloodShowsNothingRaw(t *testing.T) {
	l := newWatchLab(t, "watch-flood-token-0123456789abcdef", "node \"srv\" {\n  role = \"server\"\n}\n")
	l.pibake(t, "build", l.recipe, "--out", l.out)
	for _, mode := range []string{"lines", "json"} {
		t.Run(mode, func(t *testing.T) {
			l.stdout, l.stderr = &syncBuffer{}, &syncBuffer{}
			args := []string{"--timeout", "2m"}
			if mode == "json" {
				args = append(args, "--json")
			}
			l.watch(t, args...)
			done := make(chan struct{})
			go func() { flood(t, l.addr, 2000); close(done) }()
			if code := l.send(t, status.Record{Node: "srv", Stage: "k3s-install", State: "failed", Reason: hostileReason, Log: []string{hostileReason}}); code != http.StatusNoContent {
				t.Errorf("the node's report during the flood: HTTP %d", code)
			}
			<-done
			if code := l.send(t, status.Record{Node: "srv", Stage: "registered", State: "ok", Reason: hostileReason}); code != http.StatusNoContent {
				t.Errorf("the node's last report: HTTP %d", code)
			}
			if c := l.exit(t, time.Minute); c != exitOK {
				t.Fatalf("watch exited %d:\n%s", c, l.stderr.String())
			}
			out, errOut := l.stdout.String(), l.stderr.String()
			for name, got := range map[string]string{"stdout": out, "stderr": errOut} {
				if p := safetext.FirstUnsafe(got); p >= 0 {
					t.Errorf("%s has a raw %q:\n%q", name, got[p:min(p+12, len(got))], got[max(0, p-40):min(p+40, len(got))])
				}
			}
			if lines := strings.Count(out, "\n"); lines > 20 {
				t.Errorf("%d lines of output for a flood from one address; want it summarised:\n%s", lines, out)
			}
			if mode == "lines" {
				escaped := `k3s-install failed: \x1b]0;owned\a\x1b[2J\x1b[1A\x1b[2Kregistered ok \u009b2J \x7f <b>bold</b>`
				if !strings.Contains(out, "srv server: "+escaped) || !regexp.MustCompile(`\d+ refused from 127\.0\.0\.1 in the last \d+s: `).MatchString(out) {
					t.Errorf("lines do not show the report escaped and the refusals summarised:\n%s", out)
				}
				return
			}
			shown := false
			for line := range strings.Lines(out) {
				var v struct {
					Event  string
					Status status.Record
					Count  int
				}
				if err := json.Unmarshal([]byte(line), &v); err != nil {
					t.Fatalf("not JSON: %v\n%q", err, line)
				}
				shown = shown || v.Event == "report" && v.Status.State == "failed" && strings.HasPrefix(v.Status.Reason, `\x1b]0;owned\a`) && strings.HasPrefix(v.Status.Log[0], `\x1b]0;owned`)
			}
			if !shown || !strings.Contains(out, `"event":"refusals"`) {
				t.Errorf("JSON does not show the report escaped, or no refusal counts:\n%s", out)
			}
		})
	}
}

// TestWatchTableOnATerminal runs pibake watch in table mode under a real
// pseudo-terminal (script(1)): a hostile signed reason is shown escaped
// in the table; the only escape sequences on the terminal are the
// table's own (cursor up, clear, colours).
func TestWatchTableOnATerminal(t *testing.T) {
	scriptTool := testimage.Tool(t, "script")
	l := newWatchLab(t, "watch-tty-token-0123456789abcdef", "node \"srv\" {\n  role = \"server\"\n}\n")
	l.pibake(t, "build", l.recipe, "--out", l.out)
	self, _ := os.Executable()
	cmd := exec.Command(scriptTool, "-qec", "stty cols 200 rows 40; "+strings.Join([]string{self, "watch", l.recipe, "--out", l.out, "--listen", l.addr, "--timeout", "1m"}, " "), "/dev/null")
	cmd.Env = append(os.Environ(), "PIBAKE_TEST_AS_PIBAKE=1", "TERM=xterm", "NO_COLOR=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitListening(t, l.addr, make(chan int), &syncBuffer{})
	flood(t, l.addr, 200)
	l.send(t, status.Record{Node: "srv", Stage: "k3s-install", State: "failed", Reason: hostileReason})
	time.Sleep(1500 * time.Millisecond) // a redraw with the reason on it
	l.send(t, status.Record{Node: "srv", Stage: "cgroup", State: "failed", Reason: hostileReason, Final: true})
	cmd.Wait()
	got := strings.ReplaceAll(out.String(), "\r", "")
	own := regexp.MustCompile(`\x1b\[(\d+A|J|0m|3[123]m)`)
	rest := own.ReplaceAllString(got, "")
	if p := safetext.FirstUnsafe(rest); p >= 0 {
		t.Errorf("the terminal got a raw %q:\n%q", rest[p:min(p+12, len(rest))], rest)
	}
	if !strings.Contains(got, `\x1b]0;owned\a\x1b[2J\x1b`) || !strings.Contains(got, "\x1b[31mfailed") {
		t.Errorf("the table does not show the escaped reason in colour:\n%q", got)
	}
	if !regexp.MustCompile(`\d+ refused from 127\.0\.0\.1 in the last \d+s`).MatchString(got) {
		t.Errorf("the table does not summarise the refusals:\n%s", got)
	}
}

// TestWatchUI: pibake watch --ui serves the fleet's page, prints its URL
// once, and streams a signed report to it live; on an address that is
// not loopback the URL carries a token and the page needs it.
func TestWatchUI(t *testing.T) {
	l := newWatchLab(t, "watch-ui-token-0123456789abcdef", "node \"srv\" {\n  role = \"server\"\n  ip   = \"192.168.7.10/24\"\n}\nnode \"agent\" {\n  role = \"agent\"\n}\n")
	l.pibake(t, "build", l.recipe, "--out", l.out)
	ui := freeAddr(t)
	l.watch(t, "--ui", ui, "--timeout", "2m")
	page := "http://" + ui + "/"
	if n := strings.Count(l.stderr.String(), page); n != 1 {
		t.Fatalf("the page's URL %s is printed %d times:\n%s", page, n, l.stderr.String())
	}
	resp, err := http.Get(page + "events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewScanner(resp.Body)
	events.Buffer(nil, 1<<20)
	next := func(want string) string {
		t.Helper()
		for events.Scan() {
			if ev, ok := strings.CutPrefix(events.Text(), "event: "); ok && ev == want {
				events.Scan()
				return events.Text()
			}
		}
		t.Fatalf("no %s event: %v", want, events.Err())
		return ""
	}
	if snap := next("snapshot"); !strings.Contains(snap, `"node":"agent"`) || !strings.Contains(snap, `"not heard from":2`) {
		t.Errorf("snapshot: %s", snap)
	}
	l.send(t, status.Record{Node: "agent", Stage: "k3s-install", State: "running", Reason: hostileReason})
	if node := next("node"); !strings.Contains(node, `"phase":"k3s installing"`) || !strings.Contains(node, `\\x1b]0;owned`) {
		t.Errorf("node event: %s", node)
	}
	l.send(t, status.Record{Node: "srv", Stage: "registered", State: "ok"})
	l.send(t, status.Record{Node: "agent", Stage: "registered", State: "ok"})
	if ended := next("ended"); !strings.Contains(ended, "every awaited node registered") {
		t.Errorf("ended event: %s", ended)
	}
	if c := l.exit(t, time.Minute); c != exitOK {
		t.Fatalf("watch exited %d:\n%s", c, l.stderr.String())
	}

	// Every interface: a token in the URL, printed once; the page needs it.
	l.stderr = &syncBuffer{}
	l.watch(t, "--ui", "0.0.0.0:0", "--timeout", "2m")
	m := regexp.MustCompile(`page is at http://[^/]+:(\d+)/([0-9a-f]{32})/`).FindStringSubmatch(l.stderr.String())
	if m == nil {
		t.Fatalf("no page URL with a token:\n%s", l.stderr.String())
	}
	local := fmt.Sprintf("http://127.0.0.1:%s/", m[1])
	for path, want := range map[string]int{m[2] + "/": 200, "": 404, m[2] + "/state.json": 200} {
		resp, err := http.Get(local + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /%s: %s; want %d", path, resp.Status, want)
		}
	}
	l.send(t, status.Record{Node: "srv", Stage: "registered", State: "ok"})
	l.send(t, status.Record{Node: "agent", Stage: "registered", State: "ok"})
	if c := l.exit(t, time.Minute); c != exitOK {
		t.Fatalf("watch exited %d:\n%s", c, l.stderr.String())
	}

	// A page address that is taken: said, and nothing is watched.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"watch", l.recipe, "--out", l.out, "--listen", freeAddr(t), "--ui", busy.Addr().String()}, &stdout, &stderr); code != exitFailure ||
		!strings.Contains(stderr.String(), "--ui "+busy.Addr().String()) || !strings.Contains(stderr.String(), "address already in use") {
		t.Errorf("--ui on a busy address: exit %d\n%s", code, stderr.String())
	}
}
