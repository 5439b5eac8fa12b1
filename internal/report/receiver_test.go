package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/firstboot/status"
)

var testOutKey = bytes.Repeat([]byte{0x5a}, 32)

// fixture is a receiver on loopback for nodes "srv" (build b2) and
// "agent" (build a1), recording what it accepted and refused.
type fixture struct {
	srv      *httptest.Server
	recv     *Receiver
	events   []Event
	refusals []Refusal
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{}
	f.recv = NewReceiver(testOutKey, []Node{{Hostname: "srv", Builds: []string{"b2"}}, {Hostname: "agent", Builds: []string{"a1"}}},
		func(e Event) { f.events = append(f.events, e) },
		func(r Refusal) { f.refusals = append(f.refusals, r) })
	f.srv = httptest.NewServer(f.recv)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) nonce(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(f.srv.URL + NoncePath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || len(b) != 2*nonceBytes {
		t.Fatalf("nonce: %s %q", resp.Status, b)
	}
	return string(b)
}

// post sends body with signature sig and returns the HTTP status and the
// reason given.
func (f *fixture) post(t *testing.T, body []byte, sig string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+ReportPath, bytes.NewReader(body))
	if sig != "" {
		req.Header.Set(SignatureHeader, sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func statusJSON(node, build, stage, state string) string {
	return fmt.Sprintf(`{"version":1,"node":%q,"role":"server","build":%q,"stage":%q,"state":%q,"time":"2026-11-26T07:00:00Z","boot":"0a1b2c3d","reason":"","log":[]}`, node, build, stage, state)
}

func reportBody(nonce, status string) []byte {
	return []byte(`{"nonce":"` + nonce + `","status":` + status + `}`)
}

func TestReceiverAcceptsASignedReport(t *testing.T) {
	f := newFixture(t)
	body := reportBody(f.nonce(t), statusJSON("srv", "b2", status.StageRegistered, status.StateOK))
	if code, why := f.post(t, body, Sign(NodeKey(testOutKey, "srv", "b2"), body)); code != http.StatusNoContent {
		t.Fatalf("signed report: %d %s", code, why)
	}
	if len(f.events) != 1 || len(f.refusals) != 0 {
		t.Fatalf("events %+v, refusals %+v", f.events, f.refusals)
	}
	e := f.events[0]
	if e.Status.Node != "srv" || e.Status.Stage != status.StageRegistered || e.OlderBuild {
		t.Errorf("event = %+v", e)
	}
}

func TestReceiverMarksAnOlderBuild(t *testing.T) {
	f := newFixture(t)
	body := reportBody(f.nonce(t), statusJSON("srv", "b1", status.StageK3sInstall, status.StateRunning))
	if code, why := f.post(t, body, Sign(NodeKey(testOutKey, "srv", "b1"), body)); code != http.StatusNoContent {
		t.Fatalf("older build's report: %d %s", code, why)
	}
	if len(f.events) != 1 || !f.events[0].OlderBuild {
		t.Errorf("events = %+v; want one marked OlderBuild", f.events)
	}
}

// TestReceiverRefuses: every report a stranger on the LAN could send, or
// a broken node, is refused with the reason, and nothing is accepted.
func TestReceiverRefuses(t *testing.T) {
	srvKey := NodeKey(testOutKey, "srv", "b2")
	otherOutKey := bytes.Repeat([]byte{0x11}, 32)
	tests := []struct {
		name string
		// body gets a fresh nonce; sign signs it (or not).
		body   func(nonce string) []byte
		sign   func(body []byte) string
		status int
		reason string
	}{
		{name: "no signature", body: func(n string) []byte { return reportBody(n, statusJSON("srv", "b2", "done", "ok")) },
			sign: func([]byte) string { return "" }, status: http.StatusUnauthorized, reason: "signature does not match"},
		{name: "signed with another directory's key", body: func(n string) []byte { return reportBody(n, statusJSON("srv", "b2", "done", "ok")) },
			sign: func(b []byte) string { return Sign(NodeKey(otherOutKey, "srv", "b2"), b) }, status: http.StatusUnauthorized, reason: "signature does not match"},
		{name: "another node's key (a card taken from agent)", body: func(n string) []byte { return reportBody(n, statusJSON("srv", "b2", "done", "ok")) },
			sign: func(b []byte) string { return Sign(NodeKey(testOutKey, "agent", "a1"), b) }, status: http.StatusUnauthorized, reason: "signature does not match"},
		{name: "body changed after signing", body: func(n string) []byte { return reportBody(n, statusJSON("srv", "b2", "registered", "ok")) },
			sign: func([]byte) string {
				return Sign(srvKey, reportBody("x", statusJSON("srv", "b2", "cgroup", "failed")))
			}, status: http.StatusUnauthorized, reason: "signature does not match"},
		{name: "signature not hex", body: func(n string) []byte { return reportBody(n, statusJSON("srv", "b2", "done", "ok")) },
			sign: func([]byte) string { return "sha256=zz" }, status: http.StatusUnauthorized, reason: "signature does not match"},
		{name: "unknown node", body: func(n string) []byte { return reportBody(n, statusJSON("intruder", "b2", "done", "ok")) },
			sign: func(b []byte) string { return Sign(NodeKey(testOutKey, "intruder", "b2"), b) }, status: http.StatusForbidden, reason: "not in the plan"},
		{name: "malformed JSON", body: func(string) []byte { return []byte(`{"nonce":`) },
			sign: func(b []byte) string { return Sign(srvKey, b) }, status: http.StatusBadRequest, reason: "malformed report"},
		{name: "not a status record", body: func(n string) []byte { return reportBody(n, `{"version":2}`) },
			sign: func(b []byte) string { return Sign(srvKey, b) }, status: http.StatusBadRequest, reason: "not a pibake status"},
		{name: "too large", body: func(n string) []byte { return reportBody(n, `"`+strings.Repeat("x", 70<<10)+`"`) },
			sign: func(b []byte) string { return Sign(srvKey, b) }, status: http.StatusRequestEntityTooLarge, reason: "larger than"},
		{name: "nonce never issued", body: func(string) []byte {
			return reportBody("00112233445566778899aabbccddeeff", statusJSON("srv", "b2", "done", "ok"))
		},
			sign: func(b []byte) string { return Sign(srvKey, b) }, status: http.StatusConflict, reason: "not issued by this watch"},
		{name: "nonce of another run", body: func(string) []byte {
			return reportBody(newNonces().issue(time.Now()), statusJSON("srv", "b2", "done", "ok"))
		},
			sign: func(b []byte) string { return Sign(srvKey, b) }, status: http.StatusConflict, reason: "not issued by this watch"},
		{name: "nonce with its time changed", body: func(n string) []byte {
			b := []byte(n)
			b[15] ^= 1 // the issue time's last hex digit
			return reportBody(string(b), statusJSON("srv", "b2", "done", "ok"))
		},
			sign: func(b []byte) string { return Sign(srvKey, b) }, status: http.StatusConflict, reason: "not issued by this watch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			body := tt.body(f.nonce(t))
			code, why := f.post(t, body, tt.sign(body))
			if code != tt.status || !strings.Contains(why, tt.reason) {
				t.Errorf("got %d %q; want %d with %q", code, why, tt.status, tt.reason)
			}
			if len(f.events) != 0 {
				t.Errorf("accepted %+v", f.events)
			}
			if len(f.refusals) != 1 || f.refusals[0].Status != tt.status {
				t.Errorf("refusals = %+v; want one with status %d", f.refusals, tt.status)
			}
		})
	}
}

// TestReceiverRefusesAReplay: a captured report sent again is refused,
// and so is one whose nonce has expired.
func TestReceiverRefusesAReplay(t *testing.T) {
	f := newFixture(t)
	key := NodeKey(testOutKey, "srv", "b2")
	body := reportBody(f.nonce(t), statusJSON("srv", "b2", "registered", "ok"))
	sig := Sign(key, body)
	if code, why := f.post(t, body, sig); code != http.StatusNoContent {
		t.Fatalf("first post: %d %s", code, why)
	}
	if code, why := f.post(t, body, sig); code != http.StatusConflict || !strings.Contains(why, "already used") {
		t.Errorf("replay: %d %q; want 409", code, why)
	}

	now := time.Now()
	f.recv.now = func() time.Time { return now }
	late := reportBody(f.nonce(t), statusJSON("srv", "b2", "done", "ok"))
	f.recv.now = func() time.Time { return now.Add(NonceTTL + time.Second) }
	if code, why := f.post(t, late, Sign(key, late)); code != http.StatusConflict || !strings.Contains(why, "expired") {
		t.Errorf("expired nonce: %d %q; want 409", code, why)
	}
	if len(f.events) != 1 {
		t.Errorf("accepted %d reports; want only the first", len(f.events))
	}
}

// TestForgedReportSpendsNoNonce: a stranger who saw a nonce go by cannot
// use it up with a forged report, so the node's real report still lands.
func TestForgedReportSpendsNoNonce(t *testing.T) {
	f := newFixture(t)
	nonce := f.nonce(t)
	forged := reportBody(nonce, statusJSON("srv", "b2", "registered", "ok"))
	if code, _ := f.post(t, forged, Sign(bytes.Repeat([]byte{1}, 32), forged)); code != http.StatusUnauthorized {
		t.Fatalf("forged: %d", code)
	}
	real := reportBody(nonce, statusJSON("srv", "b2", "k3s-install", "running"))
	if code, why := f.post(t, real, Sign(NodeKey(testOutKey, "srv", "b2"), real)); code != http.StatusNoContent {
		t.Errorf("the node's report after a forgery with its nonce: %d %s", code, why)
	}
}

func TestNonceMethodsAndPaths(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		method, path string
		status       int
	}{
		{http.MethodPost, NoncePath, http.StatusMethodNotAllowed},
		{http.MethodGet, ReportPath, http.StatusMethodNotAllowed},
		{http.MethodGet, "/", http.StatusNotFound},
	} {
		req, _ := http.NewRequest(tt.method, f.srv.URL+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s: %d; want %d", tt.method, tt.path, resp.StatusCode, tt.status)
		}
	}
	// Issuing nonces stores nothing.
	for range 10000 {
		f.recv.nonces.issue(time.Now())
	}
	if n := f.recv.nonces.remembered(); n != 0 {
		t.Errorf("%d nonces remembered after issuing 10,000; want none", n)
	}
}

// TestSpentNoncesAreBounded: a node (or a stolen card's key) that signs
// more reports than any first boot sends within NonceTTL is refused with
// 429, so the spent nonces stay bounded; once they expire it may report
// again.
func TestSpentNoncesAreBounded(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	f.recv.now = func() time.Time { return now }
	key := NodeKey(testOutKey, "srv", "b2")
	for i := range maxSpentPerNode {
		body := reportBody(f.nonce(t), statusJSON("srv", "b2", "k3s-active", "waiting"))
		if code, why := f.post(t, body, Sign(key, body)); code != http.StatusNoContent {
			t.Fatalf("report %d: %d %s", i, code, why)
		}
	}
	body := reportBody(f.nonce(t), statusJSON("srv", "b2", "k3s-active", "waiting"))
	if code, why := f.post(t, body, Sign(key, body)); code != http.StatusTooManyRequests || !strings.Contains(why, "too many") {
		t.Errorf("report past the bound: %d %q; want 429", code, why)
	}
	if n := f.recv.nonces.remembered(); n != maxSpentPerNode {
		t.Errorf("%d spent nonces remembered; want %d", n, maxSpentPerNode)
	}
	// The other node is not held up by srv's reports.
	agent := reportBody(f.nonce(t), statusJSON("agent", "a1", "done", "ok"))
	if code, why := f.post(t, agent, Sign(NodeKey(testOutKey, "agent", "a1"), agent)); code != http.StatusNoContent {
		t.Errorf("agent's report: %d %s", code, why)
	}
	now = now.Add(NonceTTL + time.Second)
	body = reportBody(f.nonce(t), statusJSON("srv", "b2", "registered", "ok"))
	if code, why := f.post(t, body, Sign(key, body)); code != http.StatusNoContent {
		t.Errorf("report after the spent nonces expired: %d %s", code, why)
	}
	if n := f.recv.nonces.remembered(); n != 2 {
		t.Errorf("%d spent nonces remembered after they expired; want 2 (agent's, srv's last)", n)
	}
}

// TestSignIsHMACSHA256 pins the signature against RFC 4231's test case 2,
// which the nodes' shell implementation (report.sh) must match too.
func TestSignIsHMACSHA256(t *testing.T) {
	got := Sign([]byte("Jefe"), []byte("what do ya want for nothing?"))
	if want := "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"; got != want {
		t.Errorf("Sign = %s; want %s", got, want)
	}
	var s status.Record
	if err := json.Unmarshal([]byte(statusJSON("srv", "b2", "done", "ok")), &s); err != nil || s.Node != "srv" {
		t.Fatalf("statusJSON does not parse as a status: %v", err)
	}
}
