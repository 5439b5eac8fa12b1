package report

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkReceive is one report as a node makes it: a nonce, then the
// signed POST, over loopback HTTP. BenchmarkLoopbackBaseline is a bare
// GET and POST to a handler that does nothing, in the same run: the
// ratio is the receiver's own cost.
func BenchmarkReceive(b *testing.B) {
	recv := NewReceiver(testOutKey, []Node{{Hostname: "srv", Builds: []string{"b2"}}}, func(Event) {}, func(Refusal) {})
	// One node sends no more than maxSpentPerNode reports in NonceTTL:
	// its clock runs 3 s a look (6 s a report), so the spent nonces
	// expire as a real node's would.
	start, looks := time.Now(), atomic.Int64{}
	recv.now = func() time.Time { return start.Add(time.Duration(looks.Add(1)) * 3 * time.Second) }
	srv := httptest.NewServer(recv)
	defer srv.Close()
	key := NodeKey(testOutKey, "srv", "b2")
	status := statusJSON("srv", "b2", "registered", "ok")
	for b.Loop() {
		resp, err := http.Get(srv.URL + NoncePath)
		if err != nil {
			b.Fatal(err)
		}
		var nonce bytes.Buffer
		nonce.ReadFrom(resp.Body)
		resp.Body.Close()
		body := reportBody(nonce.String(), status)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+ReportPath, bytes.NewReader(body))
		req.Header.Set(SignatureHeader, Sign(key, body))
		resp, err = http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			b.Fatalf("report: %v %v", resp, err)
		}
		resp.Body.Close()
	}
}

func BenchmarkLoopbackBaseline(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			r.Body.Close()
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Write([]byte("00112233445566778899aabbccddeeff"))
	}))
	defer srv.Close()
	body := reportBody("00112233445566778899aabbccddeeff", statusJSON("srv", "b2", "registered", "ok"))
	for b.Loop() {
		resp, err := http.Get(srv.URL)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body) // read to the end, as a client reads a nonce, so the connection is reused
		resp.Body.Close()
		resp, err = http.Post(srv.URL, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}
