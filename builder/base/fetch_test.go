package base

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/neterr"
	"github.com/pibake/pibake/internal/xzfile"
	"github.com/pibake/pibake/internal/xztest"
)

// imageServer serves a release like downloads.raspberrypi.com: a _latest
// URL that redirects to a dated .img.xz with its .sha256 beside it. Knobs
// make it fail in the ways real servers do.
type imageServer struct {
	*httptest.Server
	xz   []byte // the .img.xz
	sum  string // what the .sha256 says
	mu   sync.Mutex
	gets int32 // GETs of the image
	reqs int32 // all requests
	// failures
	fail503     int32 // the next n image GETs answer 503
	cutAfter    int   // the next image GET stops after this many bytes (once)
	alwaysCut   bool  // every image GET is cut short
	ignoreRange bool  // answer Range requests with the whole file
	noSidecar   bool
	ranges      []string
}

const imagePath = "/images/2025-05-13-raspios-bookworm-arm64-lite.img.xz"

func newImageServer(t *testing.T, xz []byte) *imageServer {
	s := &imageServer{xz: xz, sum: sha(xz)}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func (s *imageServer) serve(w http.ResponseWriter, r *http.Request) {
	atomic.AddInt32(&s.reqs, 1)
	switch r.URL.Path {
	case "/raspios_lite_arm64_latest":
		http.Redirect(w, r, imagePath, http.StatusFound)
	case imagePath + ".sha256":
		if s.noSidecar {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "%s  %s\n", s.sum, filepath.Base(imagePath))
	case imagePath:
		if r.Method == http.MethodGet {
			atomic.AddInt32(&s.gets, 1)
			s.mu.Lock()
			s.ranges = append(s.ranges, r.Header.Get("Range"))
			fail := s.fail503 > 0
			if fail {
				s.fail503--
			}
			cut := s.cutAfter
			s.cutAfter = 0
			s.mu.Unlock()
			if fail {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			if s.alwaysCut {
				// Deliver a third of what is asked for, then drop the
				// connection: every attempt makes progress, none ends.
				start := 0
				fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &start)
				w.Header().Set("Accept-Ranges", "bytes")
				w.Header().Set("Content-Length", fmt.Sprint(len(s.xz)-start))
				if start > 0 {
					w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(s.xz)-1, len(s.xz)))
					w.WriteHeader(http.StatusPartialContent)
				}
				w.Write(s.xz[start : start+(len(s.xz)-start)/3])
				panic(http.ErrAbortHandler)
			}
			if cut > 0 && r.Header.Get("Range") == "" {
				w.Header().Set("Content-Length", fmt.Sprint(len(s.xz)))
				w.Header().Set("Accept-Ranges", "bytes")
				w.Write(s.xz[:cut])
				panic(http.ErrAbortHandler) // drop the connection mid-body
			}
			if s.ignoreRange {
				w.Header().Set("Accept-Ranges", "bytes")
				w.Header().Set("Content-Length", fmt.Sprint(len(s.xz)))
				w.Write(s.xz)
				return
			}
		}
		http.ServeContent(w, r, filepath.Base(imagePath), time.Unix(1e9, 0), bytes.NewReader(s.xz))
	default:
		http.NotFound(w, r)
	}
}

func (s *imageServer) latest() string { return s.URL + "/raspios_lite_arm64_latest" }

var (
	fixtureOnce sync.Once
	fixtureRaw  []byte
	fixtureXZ   []byte
)

// fixture is a 4 MiB image-like payload and its multi-block .xz.
func fixture(t *testing.T) ([]byte, []byte) {
	fixtureOnce.Do(func() {
		fixtureRaw = xztest.Payload(4 << 20)
		p := filepath.Join(os.TempDir(), fmt.Sprintf("pibake-fixture-%d.xz", os.Getpid()))
		xztest.Write(t, p, fixtureRaw, 512<<10)
		fixtureXZ, _ = os.ReadFile(p)
		os.Remove(p)
	})
	return fixtureRaw, fixtureXZ
}

func testOptions(t *testing.T, srv *imageServer) (Options, *[]string) {
	var logs []string
	var mu sync.Mutex
	return Options{
		Cache:      Cache{Dir: filepath.Join(t.TempDir(), "cache")},
		Jobs:       2,
		HTTPClient: srv.Client(),
		Attempts:   4,
		RetryDelay: time.Millisecond,
		Logf: func(f string, a ...any) {
			mu.Lock()
			logs = append(logs, fmt.Sprintf(f, a...))
			mu.Unlock()
		},
	}, &logs
}

func mustSource(t *testing.T, spec, pin string) Source {
	t.Helper()
	s, err := ParseSource(spec, pin)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func checkRaw(t *testing.T, img *Image, want []byte) {
	t.Helper()
	got, err := os.ReadFile(img.Path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("raw image %s: %d bytes, %v; want the %d decompressed bytes", img.Path, len(got), err, len(want))
	}
}

// cacheFiles lists what is under downloads/ and raw/.
func cacheFiles(c Cache) []string {
	var out []string
	for _, d := range []string{"downloads", "raw"} {
		m, _ := filepath.Glob(filepath.Join(c.Dir, d, "*"))
		out = append(out, m...)
	}
	return out
}

func TestFetchLatestThenCacheHit(t *testing.T) {
	raw, xz := fixture(t)
	srv := newImageServer(t, xz)
	opt, _ := testOptions(t, srv)
	img, err := Fetch(context.Background(), mustSource(t, srv.latest(), ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	checkRaw(t, img, raw)
	if img.SHA256 != sha(xz) || !strings.HasSuffix(img.FinalURL, imagePath) || img.Cached {
		t.Errorf("Fetch = %+v", img)
	}
	before := atomic.LoadInt32(&srv.reqs)
	again, err := Fetch(context.Background(), mustSource(t, srv.latest(), ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	if n := atomic.LoadInt32(&srv.reqs) - before; n != 0 || !again.Cached || again.Path != img.Path {
		t.Errorf("second Fetch made %d requests (cached=%v); want 0 from the cache", n, again.Cached)
	}
	// The raw image is sparse: the zero runs are holes (every Linux file
	// system CI runs on has them).
	fi, err := os.Stat(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	zeros := 0 // 64 KiB runs of zeros: the holes the raw image should have
	for i := 0; i+xzfile.HoleGranule <= len(raw); i += xzfile.HoleGranule {
		if bytes.Count(raw[i:i+xzfile.HoleGranule], []byte{0}) == xzfile.HoleGranule {
			zeros += xzfile.HoleGranule
		}
	}
	// (An ext4 extent tree takes a block or two of its own: allow half.)
	if used := allocated(fi); runtime.GOOS != "windows" && (zeros == 0 || used > int64(len(raw)-zeros/2)) {
		t.Errorf("raw image takes %d bytes on disk for %d, %d of them zero runs: the zero runs were written, not left as holes", used, len(raw), zeros)
	}
}

func TestFetchResumesAfterCutConnection(t *testing.T) {
	raw, xz := fixture(t)
	srv := newImageServer(t, xz)
	srv.cutAfter = len(xz) / 2
	opt, logs := testOptions(t, srv)
	img, err := Fetch(context.Background(), mustSource(t, srv.latest(), ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	checkRaw(t, img, raw)
	want := fmt.Sprintf("bytes=%d-", len(xz)/2)
	if len(srv.ranges) != 2 || srv.ranges[1] != want {
		t.Errorf("image GETs had Range headers %q; want a second one %q", srv.ranges, want)
	}
	if !strings.Contains(strings.Join(*logs, "\n"), "resuming") {
		t.Errorf("no resume logged: %q", *logs)
	}
}

func TestFetchResumesAcrossRuns(t *testing.T) {
	raw, xz := fixture(t)
	srv := newImageServer(t, xz)
	srv.alwaysCut = true
	opt, _ := testOptions(t, srv)
	opt.Attempts = 1
	if _, err := Fetch(context.Background(), mustSource(t, srv.latest(), ""), opt); err == nil || !strings.Contains(err.Error(), "run again to resume") {
		t.Fatalf("first run = %v; want a failure that says it can resume", err)
	}
	if files := cacheFiles(opt.Cache); len(files) != 0 {
		t.Errorf("a failed download left %v under final names", files)
	}
	srv.alwaysCut = false
	img, err := Fetch(context.Background(), mustSource(t, srv.latest(), ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	checkRaw(t, img, raw)
	if last := srv.ranges[len(srv.ranges)-1]; last != fmt.Sprintf("bytes=%d-", len(xz)/3) {
		t.Errorf("second run's GET had Range %q; want it to resume at %d", last, len(xz)/3)
	}
}

func TestFetchRetriesServerErrors(t *testing.T) {
	raw, xz := fixture(t)
	srv := newImageServer(t, xz)
	srv.fail503 = 2
	opt, _ := testOptions(t, srv)
	img, err := Fetch(context.Background(), mustSource(t, srv.latest(), ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	checkRaw(t, img, raw)
	if srv.gets != 3 {
		t.Errorf("%d image GETs; want 3 (two 503s, then success)", srv.gets)
	}
}

func TestFetchServerIgnoresRange(t *testing.T) {
	raw, xz := fixture(t)
	srv := newImageServer(t, xz)
	srv.cutAfter = len(xz) / 2
	srv.ignoreRange = true
	opt, logs := testOptions(t, srv)
	img, err := Fetch(context.Background(), mustSource(t, srv.latest(), ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	checkRaw(t, img, raw)
	if !strings.Contains(strings.Join(*logs, "\n"), "ignored the Range request") {
		t.Errorf("restart not logged: %q", *logs)
	}
}

func TestFetchFailures(t *testing.T) {
	_, xz := fixture(t)
	corrupt := append([]byte(nil), xz...)
	corrupt[len(corrupt)/2] ^= 0xff
	tests := []struct {
		name   string
		setup  func(s *imageServer)
		source func(s *imageServer) string
		want   []string
		gets   int32
	}{
		{name: "404", source: func(s *imageServer) string { return s.URL + "/images/missing.img.xz" }, want: []string{"HTTP 404", "check the URL"}},
		{name: "wrong checksum", setup: func(s *imageServer) { s.sum = strings.Repeat("ab", 32) }, want: []string{"checksum mismatch", strings.Repeat("ab", 32), sha(xz), "moved to"}, gets: 1},
		{name: "missing sidecar", setup: func(s *imageServer) { s.noSidecar = true }, want: []string{"no checksum", "--insecure-skip-verify"}},
		{name: "cut short every time", setup: func(s *imageServer) { s.alwaysCut = true }, want: []string{"gave up after 4 attempts", "run again to resume"}, gets: 4},
		{name: "always 503", setup: func(s *imageServer) { s.fail503 = 100 }, want: []string{"HTTP 503", "gave up after 4 attempts"}, gets: 4},
		{name: "corrupt xz", setup: func(s *imageServer) { s.xz = corrupt; s.sum = sha(corrupt) }, want: []string{"decompress", "corrupt or truncated xz"}, gets: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newImageServer(t, xz)
			if tt.setup != nil {
				tt.setup(srv)
			}
			src := srv.latest()
			if tt.source != nil {
				src = tt.source(srv)
			}
			opt, _ := testOptions(t, srv)
			_, err := Fetch(context.Background(), mustSource(t, src, ""), opt)
			if err == nil {
				t.Fatal("Fetch succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tt.gets != 0 && srv.gets != tt.gets {
				t.Errorf("%d image GETs; want %d", srv.gets, tt.gets)
			}
			if raws, _ := filepath.Glob(filepath.Join(opt.Cache.Dir, "raw", "*")); len(raws) != 0 {
				t.Errorf("a failed fetch left %v in the cache", raws)
			}
		})
	}
}

func TestFetchInsecureSkipVerify(t *testing.T) {
	raw, xz := fixture(t)
	srv := newImageServer(t, xz)
	srv.noSidecar = true
	opt, _ := testOptions(t, srv)
	opt.InsecureSkipVerify = true
	img, err := Fetch(context.Background(), mustSource(t, srv.latest(), ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	checkRaw(t, img, raw)
}

func TestFetchPinned(t *testing.T) {
	raw, xz := fixture(t)
	srv := newImageServer(t, xz)
	srv.noSidecar = true // a pin needs no sidecar
	opt, _ := testOptions(t, srv)
	img, err := Fetch(context.Background(), mustSource(t, srv.URL+imagePath, sha(xz)), opt)
	if err != nil {
		t.Fatal(err)
	}
	checkRaw(t, img, raw)
	// A different pin for a cached source asks again and fails to match.
	_, err = Fetch(context.Background(), mustSource(t, srv.URL+imagePath, strings.Repeat("0", 64)), opt)
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("Fetch with a wrong pin = %v; want a mismatch", err)
	}
}

func TestFetchConcurrentDownloadsOnce(t *testing.T) {
	raw, xz := fixture(t)
	srv := newImageServer(t, xz)
	opt, _ := testOptions(t, srv)
	var wg sync.WaitGroup
	imgs := make([]*Image, 2)
	errs := make([]error, 2)
	for i := range imgs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			imgs[i], errs[i] = Fetch(context.Background(), mustSource(t, srv.latest(), ""), opt)
		}(i)
	}
	wg.Wait()
	for i := range imgs {
		if errs[i] != nil {
			t.Fatalf("fetch %d: %v", i, errs[i])
		}
		checkRaw(t, imgs[i], raw)
	}
	if srv.gets != 1 {
		t.Errorf("%d image downloads; want 1", srv.gets)
	}
}

func TestFetchLocal(t *testing.T) {
	raw, xz := fixture(t)
	dir := t.TempDir()
	xzPath := filepath.Join(dir, "local.img.xz")
	rawPath := filepath.Join(dir, "local.img")
	os.WriteFile(xzPath, xz, 0o644)
	os.WriteFile(rawPath, raw, 0o644)
	opt := Options{Cache: Cache{Dir: filepath.Join(dir, "cache")}, Jobs: 2}
	img, err := Fetch(context.Background(), mustSource(t, xzPath, ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	checkRaw(t, img, raw)
	if img.SHA256 != sha(xz) {
		t.Errorf("sha = %s; want %s", img.SHA256, sha(xz))
	}
	img, err = Fetch(context.Background(), mustSource(t, "file://"+rawPath, sha(raw)), opt)
	if err != nil || img.Path != rawPath {
		t.Fatalf("Fetch(file:// raw) = %+v, %v; want the file itself", img, err)
	}
	if _, err := Fetch(context.Background(), mustSource(t, rawPath, strings.Repeat("1", 64)), opt); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("Fetch(raw, wrong pin) = %v; want a mismatch", err)
	}
	if _, err := Fetch(context.Background(), mustSource(t, filepath.Join(dir, "nope.img"), ""), opt); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Fetch(missing) = %v", err)
	}
	// Judged by content, not by name: an xz named as the _latest URL
	// names it (curl -O), or .xz alone, is decompressed; a gzip named
	// .img.xz and a zip are refused, naming what they are, before any
	// hashing.
	for _, name := range []string{"raspios_lite_arm64_latest", "bookworm.xz"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, xz, 0o644)
		img, err := Fetch(context.Background(), mustSource(t, p, ""), opt)
		if err != nil {
			t.Fatalf("Fetch(%s, xz content): %v", name, err)
		}
		checkRaw(t, img, raw)
		img.Release()
	}
	for name, tc := range map[string]struct{ head, want string }{
		"gzipped.img.xz": {"\x1f\x8b\x08\x00", "is a gzip file: pibake reads raw images and .xz; decompress it first (gunzip -k "},
		"image.zip":      {"PK\x03\x04\x14\x00", "is a zip archive"},
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, append([]byte(tc.head), raw[:4096]...), 0o644)
		var logs []string
		o := opt
		o.Logf = func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }
		if _, err := Fetch(context.Background(), mustSource(t, p, ""), o); err == nil || !strings.Contains(err.Error(), tc.want) || len(logs) != 0 {
			t.Errorf("Fetch(%s) = %v after %q; want %q at once", name, err, logs, tc.want)
		}
	}
}

func TestCacheListAndPrune(t *testing.T) {
	_, xz := fixture(t)
	srv := newImageServer(t, xz)
	opt, logs := testOptions(t, srv)
	img, err := Fetch(context.Background(), mustSource(t, srv.latest(), ""), opt)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := opt.Cache.List()
	if err != nil || len(entries) != 1 || entries[0].SHA256 != sha(xz) || len(entries[0].Sources) != 1 || !entries[0].InUse {
		t.Fatalf("List = %+v, %v; want one entry, in use", entries, err)
	}
	fi, _ := os.Stat(entries[0].Path)
	if entries[0].Allocated != allocated(fi) || entries[0].Size != fi.Size() {
		t.Errorf("List sizes = %d allocated, %d apparent; want %d, %d", entries[0].Allocated, entries[0].Size, allocated(fi), fi.Size())
	}
	freed, err := opt.Cache.Prune(context.Background(), 30*24*time.Hour, false, opt.Logf)
	if err != nil || freed != 0 {
		t.Errorf("Prune(recent) freed %d, %v; want nothing", freed, err)
	}
	// A build holds the image: even --all keeps it.
	if freed, err = opt.Cache.Prune(context.Background(), 0, true, opt.Logf); err != nil || !files.Exists(img.Path) {
		t.Fatalf("Prune(all) while in use: freed %d, %v; the image must stay", freed, err)
	}
	if !strings.Contains(strings.Join(*logs, "\n"), "a running build uses it") {
		t.Error("Prune did not say why it kept the image")
	}
	img.Release()
	before := allocated(fi)
	freed, err = opt.Cache.Prune(context.Background(), 0, true, opt.Logf)
	if err != nil || freed < before {
		t.Errorf("Prune(all) freed %d, %v; want at least the image's %d allocated bytes", freed, err, before)
	}
	if entries, _ := opt.Cache.List(); len(entries) != 0 {
		t.Errorf("after Prune(all): %+v", entries)
	}
	// Whatever a user or a crash leaves in raw/ is listed, not a panic.
	os.MkdirAll(filepath.Join(opt.Cache.Dir, "raw"), 0o755)
	os.WriteFile(filepath.Join(opt.Cache.Dir, "raw", "x.img"), []byte("x"), 0o644)
	if entries, err := opt.Cache.List(); err != nil || len(entries) != 1 || entries[0].SHA256 != "x" {
		t.Errorf("List with a short name in raw/ = %+v, %v", entries, err)
	}
}

func TestParseSource(t *testing.T) {
	tests := []struct {
		spec, pin, wantURL, wantPath, wantErr string
	}{
		{spec: "raspios_lite_arm64:latest", wantURL: "https://downloads.raspberrypi.com/raspios_lite_arm64_latest"},
		{spec: "https://example.org/a.img.xz", wantURL: "https://example.org/a.img.xz"},
		{spec: "file:///srv/a.img", wantPath: "/srv/a.img"},
		{spec: "a.img.xz", wantPath: "a.img.xz"},
		{spec: "a.zip", wantPath: "a.zip"}, // judged by content when fetched
		{spec: "raspios_lite_arm64:lates", wantErr: `"raspios_lite_arm64:lates": unknown alias; did you mean raspios_lite_arm64:latest?`},
		{spec: "raspios_lite_armhf:latest", wantErr: "did you mean raspios_lite_arm64:latest?"},
		{spec: "debian:trixie", wantErr: "unknown alias (there is raspios_lite_arm64:latest), and no such file"},
		{spec: "ftp://x/a.img", wantErr: "only http, https and file"},
		{spec: "a.img", pin: "abc", wantErr: "64 hexadecimal"},
	}
	for _, tt := range tests {
		s, err := ParseSource(tt.spec, tt.pin)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseSource(%q) = %v; want error with %q", tt.spec, err, tt.wantErr)
			}
			continue
		}
		if err != nil || s.URL != tt.wantURL || filepath.ToSlash(s.Path) != tt.wantPath {
			t.Errorf("ParseSource(%q) = %+v, %v", tt.spec, s, err)
		}
	}
}

// TestFetchUntrustedTLS fails at once, without retries, on a certificate
// the client does not trust.
func TestFetchUntrustedTLS(t *testing.T) {
	var gets int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { atomic.AddInt32(&gets, 1) }))
	defer srv.Close()
	opt := Options{Cache: Cache{Dir: t.TempDir()}, RetryDelay: time.Millisecond} // default client: no trust in the test CA
	_, err := Fetch(context.Background(), mustSource(t, srv.URL+"/a.img.xz", strings.Repeat("0", 64)), opt)
	if err == nil || !strings.Contains(err.Error(), "TLS certificate problem") {
		t.Errorf("Fetch(untrusted TLS) = %v; want a TLS certificate error", err)
	}
	if n := atomic.LoadInt32(&gets); n > 1 {
		t.Errorf("%d requests reached the handler; a certificate error must not be retried", n)
	}
}

// TestFetchPinnedAlias pins the SHA-256 of the default source, whose URL
// (…_latest) has no .xz in its name and redirects to the .img.xz, as the
// README shows: the download is judged compressed by its content, so the
// raw image comes back decompressed, and a later unpinned fetch of the
// same source gets the same raw image. A cache that an older pibake filled
// by name (the .xz stored as downloads/<sha>.img) is repaired on use.
func TestFetchPinnedAlias(t *testing.T) {
	raw, xz := fixture(t)
	srv := newImageServer(t, xz)
	opt, _ := testOptions(t, srv)
	for i, pin := range []string{sha(xz), ""} {
		img, err := Fetch(context.Background(), mustSource(t, srv.latest(), pin), opt)
		if err != nil {
			t.Fatalf("fetch %d (pin %q): %v", i, pin, err)
		}
		got, _ := os.ReadFile(img.Path)
		if !bytes.Equal(got, raw) {
			t.Fatalf("fetch %d (pin %q) returned %s, which is not the raw image (%d bytes, starts %q)", i, pin, img.Path, len(got), got[:min(6, len(got))])
		}
		img.Release()
	}

	// A poisoned cache from before: the .xz under the raw download name.
	poisoned, _ := testOptions(t, srv)
	dl := poisoned.Cache.downloadPath(sha(xz), false)
	os.MkdirAll(filepath.Dir(dl), 0o755)
	if err := os.WriteFile(dl, xz, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := Fetch(context.Background(), mustSource(t, srv.latest(), sha(xz)), poisoned)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Release()
	if got, _ := os.ReadFile(img.Path); !bytes.Equal(got, raw) {
		t.Errorf("a poisoned cache entry was returned as the raw image: %s", img.Path)
	}
}

// TestFetchUnreachable: a server that cannot be reached at all (nothing
// listens, or the name does not resolve) is an UnreachableError, so the
// command line can say what to do offline; a DNS miss is not retried.
func TestFetchUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	opt := Options{Cache: Cache{Dir: t.TempDir()}, Attempts: 2, RetryDelay: time.Millisecond}
	_, err = Fetch(context.Background(), mustSource(t, "http://"+addr+"/a.img.xz", strings.Repeat("0", 64)), opt)
	var unreachable *neterr.Unreachable
	if !errors.As(err, &unreachable) || !strings.Contains(err.Error(), "cannot connect") {
		t.Errorf("Fetch from a closed port = %v; want an UnreachableError", err)
	}
	retry, err := classify("https://downloads.example/x", &net.DNSError{Name: "downloads.example", Err: "no such host", IsNotFound: true})
	if retry || !errors.As(err, &unreachable) || !strings.Contains(err.Error(), "cannot resolve host downloads.example") {
		t.Errorf("classify(DNS miss) = %v, %v; want an UnreachableError, not retried", retry, err)
	}
	if _, err := classify("https://x", errors.New("unexpected EOF")); errors.As(err, &unreachable) {
		t.Error("a cut connection was taken for an unreachable server")
	}
}
