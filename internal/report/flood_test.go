package report

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestFlood: a stranger on the LAN sends nonce requests, forged reports,
// oversized and malformed bodies, as fast as the receiver takes them,
// between a node's nonce request and its signed report: the report is
// still accepted, and the receiver remembers nothing of the flood.
//
// PIBAKE_FLOOD_REQUESTS sets the flood's size (default 2,500); the peak
// RSS figure in the README comes from
//
//	PIBAKE_FLOOD_REQUESTS=100000 /usr/bin/time -v go test ./internal/report -run TestFlood -count=1 -v
func TestFlood(t *testing.T) {
	total := 2500
	if s := os.Getenv("PIBAKE_FLOOD_REQUESTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("PIBAKE_FLOOD_REQUESTS=%q: want a positive number", s)
		}
		total = n
	}
	var accepted []Event
	var refused atomic.Int64
	var mu sync.Mutex
	recv := NewReceiver(testOutKey, []Node{{Hostname: "srv", Builds: []string{"b2"}}},
		func(e Event) { mu.Lock(); accepted = append(accepted, e); mu.Unlock() },
		func(Refusal) { refused.Add(1) })
	srv := httptest.NewServer(recv)
	defer srv.Close()
	const workers = 8
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}

	f := &fixture{srv: srv, recv: recv}
	nonce := f.nonce(t)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapAlloc

	hostile := floodRequests()
	var sent atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += workers {
				mk := hostile[i%len(hostile)]
				resp, err := client.Do(mk(srv.URL))
				if err != nil {
					t.Errorf("flood request %d: %v", i, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				sent.Add(1)
			}
		}()
	}
	// The node's report, signed, with the nonce it got before the flood,
	// sent while the flood goes on.
	for sent.Load() < int64(total/2) {
		runtime.Gosched()
	}
	body := reportBody(nonce, statusJSON("srv", "b2", "registered", "ok"))
	req, _ := http.NewRequest(http.MethodPost, srv.URL+ReportPath, bytes.NewReader(body))
	req.Header.Set(SignatureHeader, Sign(NodeKey(testOutKey, "srv", "b2"), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	why, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wg.Wait()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("the node's signed report during the flood: %s %s; want 204", resp.Status, why)
	}
	mu.Lock()
	if len(accepted) != 1 || accepted[0].Status.Node != "srv" {
		t.Errorf("accepted %+v; want the node's report only", accepted)
	}
	mu.Unlock()
	if want := int64(total) * 4 / 5; refused.Load() < want-int64(len(hostile)) {
		t.Errorf("%d refusals; want every hostile POST (about %d) refused", refused.Load(), want)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("%d hostile requests: heap before %d KiB, after %d KiB; peak RSS of the test process: %s",
		total, heapBefore>>10, ms.HeapAlloc>>10, peakRSS())
}

// floodRequests are what a stranger sends, in turn: a nonce request, a
// report forged for a real node, an oversized body, a malformed body, and
// a report claiming a 32 KiB name full of terminal escapes.
func floodRequests() []func(url string) *http.Request {
	post := func(body []byte, sig string) func(string) *http.Request {
		return func(url string) *http.Request {
			req, _ := http.NewRequest(http.MethodPost, url+ReportPath, bytes.NewReader(body))
			req.Header.Set(SignatureHeader, sig)
			return req
		}
	}
	forged := reportBody(strings.Repeat("0", 64), statusJSON("srv", "b2", "registered", "ok"))
	name, _ := json.Marshal(strings.Repeat("\x1b]0;owned\a", 3000))
	named := reportBody(strings.Repeat("0", 64), strings.Replace(statusJSON("NAME", "b2", "done", "ok"), `"NAME"`, string(name), 1))
	return []func(string) *http.Request{
		func(url string) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, url+NoncePath, nil)
			return req
		},
		post(forged, Sign([]byte("stranger"), forged)),
		post(bytes.Repeat([]byte("x"), maxReportSize+4096), "sha256=00"),
		post([]byte(`{"nonce":"`+strings.Repeat("\x1b[2J", 100)), "sha256=00"),
		post(named, Sign([]byte("stranger"), named)),
	}
}

// peakRSS is the process's peak resident set (VmHWM), where Linux tells.
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
