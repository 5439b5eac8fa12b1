package base

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/cavaliergopher/grab/v3"
	"github.com/pibake/pibake/internal/atomicfile"
	"github.com/pibake/pibake/internal/bytesize"
	"github.com/pibake/pibake/internal/filekind"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/flock"
	"github.com/pibake/pibake/internal/neterr"
	"github.com/pibake/pibake/internal/progress"
	"github.com/pibake/pibake/internal/xzfile"
)

// Options control Fetch.
type Options struct {
	Cache Cache
	// Jobs is how many xz blocks decompress at once (default: all cores).
	Jobs int
	// InsecureSkipVerify allows a download with neither a pinned SHA-256
	// nor a published .sha256 beside it.
	InsecureSkipVerify bool
	// Refresh asks the network again for a source already in the cache
	// (for raspios_lite_arm64:latest: whether there is a newer release).
	Refresh bool
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// Progress, when set, is told how far the download and the
	// decompression have come (tasks "download" and "decompress").
	Progress progress.Func
	// HTTPClient is used for every request (tests count them).
	HTTPClient *http.Client
	// Attempts is how many times a download is tried (default 5), with
	// RetryDelay doubling between tries (default 2 s).
	Attempts   int
	RetryDelay time.Duration
}

func (o *Options) defaults() {
	if o.Jobs < 1 {
		o.Jobs = runtime.NumCPU()
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSHandshakeTimeout: 30 * time.Second, ResponseHeaderTimeout: 60 * time.Second}}
	}
	if o.Attempts < 1 {
		o.Attempts = 5
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 2 * time.Second
	}
}

// Image is a base image ready to clone.
type Image struct {
	// Path is the raw .img (in the cache, or the user's own .img file).
	Path string
	// XZ, when the source was xz-compressed, is that verified .img.xz (in
	// the cache, or the user's own file): its blocks past a node's boot
	// partition are the node's .img.xz blocks too.
	XZ string
	// SHA256 is the hash of the source file (the .img.xz as published).
	SHA256 string
	// Source is what the user asked for; FinalURL where it was fetched
	// from after redirects.
	Source   string
	FinalURL string
	// Cached is true when nothing was downloaded or decompressed.
	Cached bool

	// lease holds Path shared-locked while the image is in use, so that
	// cache prune does not delete it under a running build.
	lease *os.File
	// cacheEntry is true when Path is in the cache (not the user's own
	// .img file, whose time pibake leaves alone).
	cacheEntry bool
}

// Release ends the use of the image: cache prune may delete it again.
func (img *Image) Release() {
	if img != nil && img.lease != nil {
		flock.Unlock(img.lease)
		img.lease.Close()
		img.lease = nil
	}
}

// take marks the image in use (shared lock, for prune to respect) and
// used now (its modification time, for prune --older-than and cache list).
// It is called with the cache locked, so prune cannot come in between.
func (img *Image) take() error {
	f, err := os.Open(img.Path)
	if err != nil {
		return err
	}
	if ok, err := flock.Try(f, flock.Shared); !ok || err != nil {
		f.Close()
		return fmt.Errorf("lock %s for use: %v", img.Path, err)
	}
	img.lease = f
	if img.cacheEntry {
		touch(img.Path)
	}
	return nil
}

// Fetch makes src available as a verified raw image in the cache, held in
// use until the caller calls Release.
func Fetch(ctx context.Context, src Source, opt Options) (*Image, error) {
	opt.defaults()
	unlock, err := opt.Cache.lock(ctx, opt.Logf)
	if err != nil {
		return nil, err
	}
	defer unlock()
	fetch := fetchURL
	if src.Path != "" {
		fetch = fetchLocal
	}
	img, err := fetch(ctx, src, opt)
	if err != nil {
		return nil, err
	}
	img.cacheEntry = strings.HasPrefix(img.Path, filepath.Clean(opt.Cache.Dir)+string(filepath.Separator))
	if err := img.take(); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if dl := opt.Cache.downloadPath(img.SHA256, true); img.SHA256 != "" && files.Exists(dl) {
		touch(dl) // the download a cache entry came from is in use too
	}
	return img, nil
}

func fetchLocal(ctx context.Context, src Source, opt Options) (*Image, error) {
	fi, err := os.Stat(src.Path)
	if err != nil {
		return nil, fmt.Errorf("image source: %w", err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("image source %s is a directory; give a Raspberry Pi OS .img or .img.xz file", src.Path)
	}
	if err := filekind.RefuseArchive(src.Path); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(src.Path)
	if err != nil {
		return nil, err
	}
	c := opt.Cache
	sha := ""
	if rec, ok := c.readRecord(abs); ok && rec.Size == fi.Size() && rec.ModTime.Equal(fi.ModTime()) {
		sha = rec.SHA256
	} else {
		opt.Logf("hashing %s", abs)
		if sha, err = hashFile(ctx, abs); err != nil {
			return nil, err
		}
		if err := c.writeRecord(sourceRecord{Source: abs, SHA256: sha, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	if src.Pin != "" && sha != src.Pin {
		return nil, fmt.Errorf("image %s: checksum mismatch: the recipe pins sha256 %s but the file has %s", abs, src.Pin, sha)
	}
	img := &Image{Path: abs, SHA256: sha, Source: src.Spec, Cached: true}
	xz, err := IsXZ(abs)
	if err != nil || !xz {
		return img, err // a raw image is used where it is
	}
	return img, ensureRaw(ctx, c, abs, sha, img, opt)
}

// IsXZ says whether a file is xz-compressed, by its first bytes.
func IsXZ(path string) (bool, error) { return filekind.IsXZ(path) }

// hashFile is a file's SHA-256, for a download or a local image.
func hashFile(ctx context.Context, path string) (string, error) {
	sum, _, err := files.SHA256(ctx, path)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return sum, nil
}

// ensureRaw decompresses a verified .img.xz into raw/<sha>.img unless it
// is there already.
func ensureRaw(ctx context.Context, c Cache, xzPath, sha string, img *Image, opt Options) error {
	raw := c.rawPath(sha)
	img.Path, img.XZ = raw, xzPath
	if files.Exists(raw) {
		return nil
	}
	img.Cached = false
	if err := os.MkdirAll(filepath.Dir(raw), 0o755); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	tmp := raw + ".tmp"
	start := time.Now()
	opt.Logf("decompressing %s (%s)", filepath.Base(xzPath), plural(opt.Jobs, "job"))
	if err := xzfile.Decompress(ctx, xzPath, tmp, opt.Jobs, opt.Progress); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("decompress %s: %w", xzPath, err)
	}
	if err := atomicfile.Sync(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, raw); err != nil {
		return err
	}
	opt.Logf("decompressed in %s", time.Since(start).Round(100*time.Millisecond))
	return nil
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// fromCache points img at what the cache holds for the download sha: its
// raw image, decompressed now if only the .img.xz is there. An
// uncompressed download is its own raw image; one whose content is xz
// after all (stored by name by pibake before 2026-11) is moved to its .xz
// name first. It reports false when the cache holds neither.
func (c Cache) fromCache(ctx context.Context, sha string, img *Image, opt Options) (bool, error) {
	if files.Exists(c.rawPath(sha)) {
		img.Path = c.rawPath(sha)
		if dl := c.downloadPath(sha, true); files.Exists(dl) {
			img.XZ = dl
		}
		return true, nil
	}
	if dl := c.downloadPath(sha, false); files.Exists(dl) {
		xz, err := IsXZ(dl)
		if err != nil {
			return false, fmt.Errorf("cache: %w", err)
		}
		if !xz {
			img.Path = dl
			return true, nil
		}
		if err := os.Rename(dl, c.downloadPath(sha, true)); err != nil {
			return false, fmt.Errorf("cache: %w", err)
		}
	}
	if dl := c.downloadPath(sha, true); files.Exists(dl) {
		return true, ensureRaw(ctx, c, dl, sha, img, opt)
	}
	return false, nil
}

func fetchURL(ctx context.Context, src Source, opt Options) (*Image, error) {
	c := opt.Cache
	img := &Image{Source: src.Spec, Cached: true}

	// A source seen before needs no network, unless refreshing.
	if rec, ok := c.readRecord(src.URL); ok && !opt.Refresh && (src.Pin == "" || src.Pin == rec.SHA256) {
		img.SHA256, img.FinalURL = rec.SHA256, rec.FinalURL
		if found, err := c.fromCache(ctx, rec.SHA256, img, opt); found || err != nil {
			return img, err
		}
	}
	img.Cached = false

	want, finalURL, err := expectedSum(ctx, src, opt)
	if err != nil {
		return nil, err
	}
	img.FinalURL = finalURL
	if want != "" {
		img.SHA256 = want
		if found, err := c.fromCache(ctx, want, img, opt); found || err != nil {
			if err == nil {
				err = c.writeRecord(sourceRecord{Source: src.URL, FinalURL: finalURL, SHA256: want})
			}
			return img, err
		}
	}
	got, err := c.download(ctx, finalURL, want, opt)
	if err != nil {
		return nil, err
	}
	img.SHA256 = got
	if _, err := c.fromCache(ctx, got, img, opt); err != nil {
		return nil, err
	}
	img.Cached = false
	if err := c.writeRecord(sourceRecord{Source: src.URL, FinalURL: finalURL, SHA256: got}); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return img, nil
}

// expectedSum is the SHA-256 the download must have, and the URL it comes
// from: the pin when the recipe has one (no request), else the .sha256
// published beside the file the URL redirects to.
func expectedSum(ctx context.Context, src Source, opt Options) (want, finalURL string, err error) {
	if src.Pin != "" {
		return src.Pin, src.URL, nil
	}
	if finalURL, err = resolve(ctx, opt.HTTPClient, src.URL); err != nil {
		return "", "", err
	}
	want, err = sidecarSum(ctx, opt.HTTPClient, finalURL)
	switch {
	case errors.Is(err, errNoSidecar) && opt.InsecureSkipVerify:
		opt.Logf("warning: %s.sha256 does not exist; downloading without verification (--insecure-skip-verify)", finalURL)
		return "", finalURL, nil
	case errors.Is(err, errNoSidecar):
		return "", "", fmt.Errorf("image %s: no checksum to verify it against: %s.sha256 does not exist. Pin the file's SHA-256 in the recipe (image { sha256 = \"…\" }), or pass --insecure-skip-verify to trust it unverified", src.URL, finalURL)
	}
	return want, finalURL, err
}

// download fetches url into the cache and verifies it against want (when
// set); it is stored by its SHA-256, as .img.xz or .img by its content.
func (c Cache) download(ctx context.Context, url, want string, opt Options) (string, error) {
	partial := c.path("partial", keyOf(url))
	if err := os.MkdirAll(filepath.Dir(partial), 0o755); err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	if err := download(ctx, url, partial, opt); err != nil {
		return "", err
	}
	got, err := hashFile(ctx, partial)
	if err != nil {
		return "", err
	}
	if want != "" && got != want {
		bad := c.path("bad", keyOf(url)+"-"+got)
		os.MkdirAll(filepath.Dir(bad), 0o755)
		os.Rename(partial, bad)
		return "", fmt.Errorf("image %s: checksum mismatch: expected sha256 %s, downloaded file has %s; it was moved to %s", url, want, got, bad)
	}
	if err := atomicfile.Sync(partial); err != nil {
		return "", err
	}
	xz, err := IsXZ(partial)
	if err != nil {
		return "", err
	}
	dl := c.downloadPath(got, xz)
	if err := os.MkdirAll(filepath.Dir(dl), 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(partial, dl); err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	return got, nil
}

// resolve follows redirects (raspios_lite_arm64_latest points at the
// newest release) and returns the final URL.
func resolve(ctx context.Context, client *http.Client, rawURL string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, rawURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", neterr.Describe(rawURL, err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusMethodNotAllowed:
		return rawURL, nil // no HEAD here: take the URL as it is
	case resp.StatusCode >= 400:
		return "", neterr.Status(rawURL, resp.StatusCode)
	}
	return resp.Request.URL.String(), nil
}

var errNoSidecar = errors.New("no .sha256 sidecar")

// sidecarSum reads the .sha256 file published beside an image
// ("<hex>  <name>", as sha256sum writes it).
func sidecarSum(ctx context.Context, client *http.Client, fileURL string) (string, error) {
	u := fileURL + ".sha256"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", neterr.Describe(u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		return "", errNoSidecar
	}
	if resp.StatusCode != http.StatusOK {
		return "", neterr.Status(u, resp.StatusCode)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<10))
	name := baseName(fileURL)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		sum := strings.ToLower(f[0])
		if !sha256Hex.MatchString(sum) {
			break
		}
		if len(f) == 1 || strings.TrimPrefix(f[1], "*") == name {
			return sum, nil
		}
	}
	return "", fmt.Errorf("%s: not a sha256sum file for %s", u, name)
}

// errRangeIgnored: the server answered a resume request with the whole file.
var errRangeIgnored = errors.New("the server ignored the Range request")

// download fetches url into dst with grab, resuming a partial file,
// retrying transient failures with backoff.
func download(ctx context.Context, url, dst string, opt Options) error {
	client := grab.NewClient()
	client.HTTPClient = opt.HTTPClient
	client.UserAgent = "pibake"
	delay := opt.RetryDelay
	for attempt := 1; ; attempt++ {
		req, err := grab.NewRequest(dst, url)
		if err != nil {
			return fmt.Errorf("download %s: %w", url, err)
		}
		req = req.WithContext(ctx)
		req.IgnoreRemoteTime = true
		req.BeforeCopy = func(resp *grab.Response) error {
			if resp.DidResume && resp.HTTPResponse.StatusCode != http.StatusPartialContent {
				return errRangeIgnored
			}
			return nil
		}
		if fi, err := os.Stat(dst); err == nil && fi.Size() > 0 {
			opt.Logf("resuming %s at %s", url, bytesize.Format(fi.Size()))
		} else {
			opt.Logf("downloading %s", url)
		}
		resp := client.Do(req)
		showProgress(resp, progress.New(opt.Progress, "download", resp.Size()))
		err = resp.Err()
		if err == nil {
			opt.Logf("downloaded %s in %s", bytesize.Format(resp.Size()), resp.Duration().Round(100*time.Millisecond))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		transient, msg := classify(url, err)
		switch {
		case errors.Is(err, errRangeIgnored), errors.Is(err, grab.ErrBadLength):
			opt.Logf("%s: %v; starting the download again from the beginning", url, err)
			os.Remove(dst)
		case !transient:
			return msg
		}
		if attempt >= opt.Attempts {
			return fmt.Errorf("%w (gave up after %d attempts; run again to resume)", msg, attempt)
		}
		opt.Logf("%v; retrying in %s (attempt %d of %d)", msg, delay, attempt+1, opt.Attempts)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// classify says whether a download error is worth retrying, and words it.
func classify(url string, err error) (bool, error) {
	var code grab.StatusCodeError
	if errors.As(err, &code) {
		c := int(code)
		return c >= 500 || c == http.StatusTooManyRequests || c == http.StatusRequestTimeout, neterr.Status(url, c)
	}
	if errors.Is(err, errRangeIgnored) || errors.Is(err, grab.ErrBadLength) {
		return true, fmt.Errorf("download %s: %w", url, err)
	}
	msg := neterr.Describe(url, err)
	return !neterr.Permanent(err), msg
}

// showProgress reports a download's progress until it ends.
func showProgress(resp *grab.Response, c *progress.Counter) {
	if c == nil {
		<-resp.Done
		return
	}
	t := time.NewTicker(progress.Interval)
	defer t.Stop()
	for {
		select {
		case <-resp.Done:
			c.Set(resp.BytesComplete())
			if resp.Err() == nil {
				c.Finish()
			}
			return
		case <-t.C:
			c.Set(resp.BytesComplete())
		}
	}
}
