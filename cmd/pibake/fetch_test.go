package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ulikunitz/xz"
)

// TestFetchCommand runs `pibake fetch` against a loopback server: it
// verifies, caches and decompresses, and the second run makes no request.
func TestFetchCommand(t *testing.T) {
	raw := bytes.Repeat([]byte("raspberry pi image\n"), 1<<16)
	var buf bytes.Buffer
	w, _ := xz.WriterConfig{BlockSize: 256 << 10}.NewWriter(&buf)
	w.Write(raw)
	w.Close()
	sum := sha256.Sum256(buf.Bytes())
	var reqs int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt32(&reqs, 1)
		switch r.URL.Path {
		case "/os.img.xz.sha256":
			fmt.Fprintf(w, "%s  os.img.xz\n", hex.EncodeToString(sum[:]))
		case "/os.img.xz":
			http.ServeContent(w, r, "os.img.xz", time.Unix(1e9, 0), bytes.NewReader(buf.Bytes()))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	cache := t.TempDir()
	args := []string{"fetch", "--cache", cache, srv.URL + "/os.img.xz"}

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), args, &stdout, &stderr); code != exitOK {
		t.Fatalf("pibake fetch: exit %d\n%s", code, stderr.String())
	}
	// Not a terminal: the download and the decompression as lines.
	for _, want := range []string{"download: 100% (", "decompress: 100% ("} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	path := strings.TrimSpace(stdout.String())
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, raw) || !strings.HasPrefix(path, cache) {
		t.Fatalf("fetch printed %q holding %d bytes (%v); want the decompressed image in the cache", path, len(got), err)
	}
	before := atomic.LoadInt32(&reqs)
	stdout.Reset()
	if code := run(context.Background(), append(args, "-q"), &stdout, &stderr); code != exitOK || strings.TrimSpace(stdout.String()) != path {
		t.Fatalf("second fetch: exit %d, %q", code, stdout.String())
	}
	if n := atomic.LoadInt32(&reqs) - before; n != 0 {
		t.Errorf("second fetch made %d requests; want 0", n)
	}

	stdout.Reset()
	if code := run(context.Background(), []string{"cache", "list", "--cache", cache}, &stdout, &stderr); code != exitOK || !strings.Contains(stdout.String(), hex.EncodeToString(sum[:])[:16]) {
		t.Errorf("cache list: exit %d\n%s", code, stdout.String())
	}
}

// TestInterruptedExitCode: a command stopped by SIGINT (a cancelled
// context) exits 130.
func TestInterruptedExitCode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"fetch", "--cache", t.TempDir(), "http://127.0.0.1:1/os.img.xz"}, &stdout, &stderr)
	if code != exitInterrupted {
		t.Errorf("interrupted fetch: exit %d; want %d\n%s", code, exitInterrupted, stderr.String())
	}
}
