package watchweb

import (
	"bufio"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/firstboot/status"
	"github.com/pibake/pibake/internal/report"
)

func get(t *testing.T, url, host string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func serve(t *testing.T, addr string) *Server {
	t.Helper()
	fleet := report.NewFleet([]report.Planned{{Hostname: "srv", Role: "server", Builds: []string{"b"}, Reports: true}}, nil)
	s, err := Listen(addr, NewHub("lab", fleet))
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(s.Close)
	return s
}

// TestLoopbackPage: on loopback the page is open, with its security
// headers, to requests naming this machine; a Host of another name (a
// DNS-rebinding page elsewhere) gets nothing.
func TestLoopbackPage(t *testing.T) {
	s := serve(t, "127.0.0.1:0")
	base := s.URL()
	if strings.Count(base, "/") != 3 {
		t.Errorf("loopback URL %s carries a token", base)
	}
	for _, tt := range []struct {
		path, host string
		status     int
		ctype      string
	}{
		{path: "", status: 200, ctype: "text/html"},
		{path: "app.js", status: 200, ctype: "text/javascript"},
		{path: "app.css", status: 200, ctype: "text/css"},
		{path: "state.json", status: 200, ctype: "application/json"},
		{path: "", host: "localhost", status: 200, ctype: "text/html"},
		{path: "", host: "evil.example:8471", status: 404},
		{path: "", host: "127.0.0.1.nip.io", status: 404},
		{path: "nope", status: 404},
	} {
		resp, body := get(t, base+tt.path, tt.host)
		if resp.StatusCode != tt.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.ctype) {
			t.Errorf("GET /%s (Host %q): %s %s; want %d %s", tt.path, tt.host, resp.Status, resp.Header.Get("Content-Type"), tt.status, tt.ctype)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET /%s: Content-Security-Policy %q", tt.path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("GET /%s: headers %v", tt.path, resp.Header)
		}
		if tt.status == 200 && tt.path == "" && (strings.Contains(body, "http://") || strings.Contains(body, "https://") || strings.Contains(body, "<script>")) {
			t.Errorf("the page loads something from elsewhere, or has an inline script:\n%s", body)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, base, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %v %v; want 405", resp, err)
	}
}

// TestListenAddresses: no host is loopback; no port is DefaultPort; an
// IPv6 loopback in brackets, with or without a port, is loopback.
func TestListenAddresses(t *testing.T) {
	for _, tt := range []struct {
		addr, prefix string
		token        bool
	}{
		{addr: ":0", prefix: "http://127.0.0.1:"},
		{addr: "127.0.0.1:0", prefix: "http://127.0.0.1:"},
		{addr: "[::1]:0", prefix: "http://[::1]:"},
		{addr: "localhost:0", prefix: "http://127.0.0.1:"},
		{addr: "[::1]", prefix: "http://[::1]:" + DefaultPort + "/"},
		{addr: "0.0.0.0:0", prefix: "http://" + hostname(t) + ":", token: true},
	} {
		s, err := Listen(tt.addr, NewHub("lab", report.NewFleet(nil, nil)))
		if err != nil {
			if strings.Contains(err.Error(), "address already in use") || strings.Contains(err.Error(), "cannot assign") {
				continue // the default port is taken, or no IPv6 here
			}
			t.Fatalf("Listen(%q): %v", tt.addr, err)
		}
		u := s.URL()
		s.ln.Close()
		if !strings.HasPrefix(u, tt.prefix) || regexp.MustCompile(`/[0-9a-f]{32}/$`).MatchString(u) != tt.token {
			t.Errorf("Listen(%q) serves %s; want %s… (token %v)", tt.addr, u, tt.prefix, tt.token)
		}
	}
}

// TestTokenPage: on any other address the page needs the token that is
// in its URL; without it, or with another, nothing is served.
func TestTokenPage(t *testing.T) {
	s := serve(t, "0.0.0.0:0") // every interface; the test only connects over loopback
	u, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.Trim(u.Path, "/")
	local := "http://127.0.0.1:" + u.Port() + "/"
	if len(tok) != 32 || strings.Trim(tok, "0123456789abcdef") != "" || u.Path != "/"+tok+"/" {
		t.Fatalf("URL %s: want a 32-hex-digit token as the path", u)
	}
	for _, tt := range []struct {
		path   string
		status int
	}{
		{path: tok + "/", status: 200},
		{path: tok + "/app.js", status: 200},
		{path: tok + "/state.json", status: 200},
		{path: "", status: 404},
		{path: "app.js", status: 404},
		{path: strings.Repeat("0", 32) + "/", status: 404},
		{path: tok, status: 404},
	} {
		if resp, _ := get(t, local+tt.path, ""); resp.StatusCode != tt.status {
			t.Errorf("GET /%s: %s; want %d", tt.path, resp.Status, tt.status)
		}
	}
	if other, _ := url.Parse(serve(t, "0.0.0.0:0").URL()); other.Path == u.Path {
		t.Error("two pages got the same token")
	}
}

// TestEvents: a browser gets the snapshot, then each change, then the
// end; a browser that stops reading is let go, not waited for.
func TestEvents(t *testing.T) {
	fleet := report.NewFleet([]report.Planned{{Hostname: "srv", Role: "server", Builds: []string{"b"}, Reports: true}}, nil)
	hub := NewHub("lab", fleet)
	s, err := Listen("127.0.0.1:0", hub)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Close()
	resp, err := http.Get(s.URL() + "events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("events: Content-Type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	next := func() (string, string) {
		var event, data string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading events: %v", err)
			}
			switch {
			case line == "\n":
				return event, data
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimSpace(line[7:])
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimSpace(line[6:])
			}
		}
	}
	if ev, data := next(); ev != "snapshot" || !strings.Contains(data, `"node":"srv"`) || !strings.Contains(data, `"not heard from":1`) {
		t.Errorf("first event %s %s; want the snapshot", ev, data)
	}
	n := fleet.Apply(report.Event{Received: time.Now(), Status: statusOf("srv", "b", "k3s-install", "running", "\x1b[2J")})
	hub.Node(n, fleet.Counts())
	if ev, data := next(); ev != "node" || !strings.Contains(data, `"phase":"k3s installing"`) || !strings.Contains(data, `\\x1b[2J`) || strings.Contains(data, `\u001b`) {
		t.Errorf("event %s %s; want the node in k3s installing with its reason escaped", ev, data)
	}
	hub.Refusal("09:00:00 3 refused from 10.0.0.7 in the last minute: bad signature")
	if ev, data := next(); ev != "refusal" || !strings.Contains(data, "3 refused from 10.0.0.7") {
		t.Errorf("event %s %s; want the refusal line", ev, data)
	}
	hub.End("every awaited node registered")
	if ev, data := next(); ev != "ended" || !strings.Contains(data, "every awaited node registered") {
		t.Errorf("event %s %s; want the end", ev, data)
	}

	// A browser that never reads: the hub lets it go once its queue is
	// full, and the others still get every change.
	hub2 := NewHub("lab", fleet)
	_, slow, _ := hub2.subscribe()
	_, fast, _ := hub2.subscribe()
	for range clientQueue + 1 {
		hub2.Refusal("x")
		<-fast
	}
	if !closed(slow) {
		t.Error("a browser that stopped reading is still subscribed")
	}
	hub2.Refusal("y")
	if m := <-fast; m.event != "refusal" {
		t.Errorf("the reading browser got %v", m)
	}
}

// closed reads what c holds and reports whether it was closed after it.
func closed(c chan message) bool {
	for {
		select {
		case _, open := <-c:
			if !open {
				return true
			}
		default:
			return false
		}
	}
}

func statusOf(node, build, stage, state, reason string) status.Record {
	return status.Record{Version: 1, Node: node, Build: build, Stage: stage, State: state, Reason: reason}
}

func hostname(t *testing.T) string {
	name, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return name
}
