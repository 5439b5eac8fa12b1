package firstboot

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// TestReporterHMAC checks report.sh's HMAC-SHA256, written in POSIX shell
// over sha256sum, against Go's crypto/hmac: keys whose bytes XOR the pads
// to NUL (0x36, 0x5c) or are NUL, and bodies with printf's own escapes in
// them. A mismatch would have every report refused as forged.
func TestReporterHMAC(t *testing.T) {
	src := string(script("report.sh"))
	from, to := strings.Index(src, "pad_key() {"), strings.Index(src, "# send FILE")
	if from < 0 || to < from {
		t.Fatal("report.sh has no pad_key … send between which the HMAC functions sit")
	}
	funcs := src[from:to]
	keys := []string{
		strings.Repeat("36", 32),
		strings.Repeat("5c", 16) + strings.Repeat("00", 16),
		"00112233445566778899aabbccddeeff0123456789abcdef36363636365c5cff",
	}
	bodies := []string{
		`{"nonce":"0a1b","status":{"reason":"50% done \n \\ '\"' $HOME"}}`,
		"",
		"ünïcödé and a tab\there\n",
	}
	for _, key := range keys {
		for _, body := range bodies {
			cmd := exec.Command("sh", "-c", funcs+"\nhmac_sha256 \"$1\"", "sh", key)
			cmd.Stdin = strings.NewReader(body)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("sh: %v\n%s", err, out)
			}
			k, _ := hex.DecodeString(key)
			m := hmac.New(sha256.New, k)
			m.Write([]byte(body))
			if got, want := strings.TrimSpace(string(out)), hex.EncodeToString(m.Sum(nil)); got != want {
				t.Errorf("key %s, body %q: report.sh gives %s; want %s", key, body, got, want)
			}
		}
	}
}

// TestReporterBacksOff: whatever the receiver answers but 2xx, 400 and
// 413 (409 for a nonce it does not take, 5xx), report.sh tries again with
// a new nonce after its backoff (1, 2, 4, 8 s…), never at once: under a
// flood of forged traffic, a node must not busy-loop on the receiver.
func TestReporterBacksOff(t *testing.T) {
	curl := requireTool(t, "curl")
	answers := []int{http.StatusConflict, http.StatusConflict, http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusNoContent, http.StatusNoContent}
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/v1/nonce" {
			seen = append(seen, "nonce")
			io.WriteString(w, strings.Repeat("0a", 32))
			return
		}
		code := http.StatusNoContent
		if len(answers) > 0 {
			code, answers = answers[0], answers[1:]
		}
		seen = append(seen, fmt.Sprintf("post %d", code))
		w.WriteHeader(code)
	}))
	defer srv.Close()

	n := newFakeNode(t, renderFor(t, reportRecipe, "pi", Options{BuildID: "b1", ReportKey: testReportKey}))
	n.activate(t) // queues "activate running", "activate ok"
	n.write(t, "etc/pibake/node.env", strings.ReplaceAll(n.read(t, "etc/pibake/node.env"), "http://192.168.1.5:8470", srv.URL))
	n.write(t, "var/lib/pibake/firstboot.done", "")
	if err := os.WriteFile(filepath.Join(n.stubDir, "sleep"), []byte(stubPrelude+`record sleep "$@"`+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if code := n.run(t, filepath.Join(n.root, "usr/local/lib/pibake/report.sh"), "REAL_CURL="+curl, "PIBAKE_REPORT_IDLE=1"); code != 0 {
		t.Fatalf("report.sh exited %d:\n%s", code, n.readOr("var/log/pibake/report.log"))
	}
	var sleeps []string
	for line := range strings.Lines(n.commands(t)) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "sleep "); ok {
			sleeps = append(sleeps, s)
		}
	}
	if got := strings.Join(sleeps, " "); got != "1 2 4 8" {
		t.Errorf("report.sh slept %q between tries; want 1 2 4 8 (a backoff after each 409 and 5xx)\n%s", got, n.readOr("var/log/pibake/report.log"))
	}
	mu.Lock()
	defer mu.Unlock()
	want := "nonce,post 409,nonce,post 409,nonce,post 503,nonce,post 500,nonce,post 204,nonce,post 204"
	if got := strings.Join(seen, ","); got != want {
		t.Errorf("the receiver saw %s; want %s", got, want)
	}
	mustContain(t, "report.log", n.readOr("var/log/pibake/report.log"), "(HTTP 409); next try in 1s", "(HTTP 503); next try in 4s", "every report sent")
}

// TestJSONStringHostile: lib.sh's json_string turns whatever a log line
// or reason holds into a JSON string that Python's json module (an
// outside parser) reads back as the text without its control characters
// and broken bytes, and whose bytes hold no DEL or C1 control: JSON
// allows those raw, but a terminal showing the record acts on them.
func TestJSONStringHostile(t *testing.T) {
	python := requireTool(t, "python3")
	lib := string(script("lib.sh"))
	tests := []struct{ in, want string }{
		{in: "plain words", want: "plain words"},
		{in: "\x1b]0;owned\a\x1b[2J", want: "]0;owned[2J"},
		{in: "a\x7fb", want: "a\x7fb"},
		{in: "csi \u009b2J osc \u009d0;x\u009c and \u0080\u009f", want: "csi \u009b2J osc \u009d0;x\u009c and \u0080\u009f"},
		{in: "not utf-8 \xff\xfe \xc3( end", want: "not utf-8  ( end"},
		{in: "cut short \xc2", want: "cut short "},
		{in: `back\slash "quoted"` + "\ttab\nline two", want: `back\slash "quoted"` + "\ttab\nline two"},
		{in: "ünïcødé ✓ 🥧 \u00a0nbsp", want: "ünïcødé ✓ 🥧 \u00a0nbsp"},
	}
	for _, tt := range tests {
		out, err := exec.Command("sh", "-c", lib+"\njson_string \"$1\"", "sh", tt.in).Output()
		if err != nil {
			t.Fatalf("json_string %q: %v", tt.in, err)
		}
		if strings.ContainsFunc(string(out), func(r rune) bool { return r == 0x7f || r >= 0x80 && r <= 0x9f }) || !utf8.Valid(out) {
			t.Errorf("json_string %q = %q: DEL, C1 or broken UTF-8 left raw", tt.in, out)
		}
		cmd := exec.Command(python, "-c", "import json, sys; sys.stdout.buffer.write(json.loads(sys.stdin.buffer.read()).encode('utf-8', 'surrogatepass'))")
		cmd.Stdin = bytes.NewReader(out)
		back, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("json_string %q = %q, which Python's json does not read: %v\n%s", tt.in, out, err, back)
			continue
		}
		if string(back) != tt.want {
			t.Errorf("json_string %q = %q, which reads back as %q; want %q", tt.in, out, back, tt.want)
		}
	}
}
