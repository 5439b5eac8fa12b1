package base

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pibake/pibake/internal/atomicfile"
)

// Cache is the content-addressed store of base images:
//
//	downloads/<sha256>.img.xz   verified downloads, named by their SHA-256
//	raw/<sha256>.img            decompressed images, named by the download's SHA-256
//	partial/<key>               interrupted downloads, resumed next time
//	bad/<key>-<sha256>          downloads whose checksum did not match
//	sources/<key>.json          which source resolved to which SHA-256
//	lock                        held while a pibake process uses the cache
//
// Files appear under their final names only when complete (written under
// a temporary name, synced, renamed).
type Cache struct {
	Dir string
}

// DefaultCacheDir is $XDG_CACHE_HOME/pibake (or the platform's cache
// directory).
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache directory (set --cache): %w", err)
	}
	return filepath.Join(d, "pibake"), nil
}

func (c Cache) path(parts ...string) string {
	return filepath.Join(append([]string{c.Dir}, parts...)...)
}

// lock waits for exclusive use of the cache, so two pibake processes never
// download or decompress the same image twice or see a half-written file.
func (c Cache) lock(ctx context.Context, logf func(string, ...any)) (func(), error) {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cache %s: %w", c.Dir, err)
	}
	f, err := os.OpenFile(c.path("lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", c.Dir, err)
	}
	for waited := false; ; waited = true {
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock cache %s: %w", c.Dir, err)
		}
		if ok {
			return func() { unlock(f); f.Close() }, nil
		}
		if !waited {
			logf("waiting for another pibake that is using the cache %s", c.Dir)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sourceRecord remembers what a source resolved to, so a later build
// needs no network.
type sourceRecord struct {
	Source   string `json:"source"`
	FinalURL string `json:"final_url,omitempty"`
	SHA256   string `json:"sha256"`
	// For local files: the SHA-256 is reused while size and time match.
	Size    int64     `json:"size,omitempty"`
	ModTime time.Time `json:"mod_time,omitempty"`
}

func keyOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:12])
}

func (c Cache) readRecord(source string) (sourceRecord, bool) {
	b, err := os.ReadFile(c.path("sources", keyOf(source)+".json"))
	if err != nil {
		return sourceRecord{}, false
	}
	var r sourceRecord
	if json.Unmarshal(b, &r) != nil || !sha256Hex.MatchString(r.SHA256) {
		return sourceRecord{}, false
	}
	return r, true
}

func (c Cache) writeRecord(r sourceRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.path("sources"), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(c.path("sources", keyOf(r.Source)+".json"), append(b, '\n'), 0o644)
}

// rawPath is where the decompressed image of a download lives.
func (c Cache) rawPath(sha string) string { return c.path("raw", sha+".img") }

func (c Cache) downloadPath(sha string, compressed bool) string {
	if compressed {
		return c.path("downloads", sha+".img.xz")
	}
	return c.path("downloads", sha+".img")
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// touch marks an entry as used now, for prune.
func touch(p string) {
	now := time.Now()
	os.Chtimes(p, now, now)
}

// fileSHA256 hashes a file.
func fileSHA256(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx: ctx, r: f}); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a long read when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// Entry is one cached raw image.
type Entry struct {
	SHA256   string    `json:"sha256"`
	Path     string    `json:"path"`
	Size     int64     `json:"size"`
	LastUsed time.Time `json:"last_used"`
	Sources  []string  `json:"sources"`
}

// List returns the cached raw images, most recently used first.
func (c Cache) List() ([]Entry, error) {
	sources := map[string][]string{}
	recs, _ := filepath.Glob(c.path("sources", "*.json"))
	for _, p := range recs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var r sourceRecord
		if json.Unmarshal(b, &r) == nil {
			sources[r.SHA256] = append(sources[r.SHA256], r.Source)
		}
	}
	raws, err := filepath.Glob(c.path("raw", "*.img"))
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, p := range raws {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		sha := strings.TrimSuffix(filepath.Base(p), ".img")
		srcs := sources[sha]
		sort.Strings(srcs)
		out = append(out, Entry{SHA256: sha, Path: p, Size: fi.Size(), LastUsed: fi.ModTime(), Sources: srcs})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out, nil
}

// Prune removes partial and failed downloads, and every download and raw
// image not used since before (all of them when before is zero... use
// All). It returns the bytes freed.
func (c Cache) Prune(ctx context.Context, olderThan time.Duration, all bool, logf func(string, ...any)) (int64, error) {
	unlock, err := c.lock(ctx, logf)
	if err != nil {
		return 0, err
	}
	defer unlock()
	cutoff := time.Now().Add(-olderThan)
	var freed int64
	remove := func(p string, fi fs.FileInfo) error {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
		freed += fi.Size()
		logf("removed %s", p)
		return nil
	}
	for _, dir := range []string{"partial", "bad", "downloads", "raw"} {
		entries, err := os.ReadDir(c.path(dir))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return freed, err
		}
		for _, e := range entries {
			fi, err := e.Info()
			if err != nil {
				continue
			}
			stale := all || dir == "partial" || dir == "bad" || fi.ModTime().Before(cutoff)
			if stale {
				if err := remove(c.path(dir, e.Name()), fi); err != nil {
					return freed, err
				}
			}
		}
	}
	// Records of sources whose image is gone.
	recs, _ := filepath.Glob(c.path("sources", "*.json"))
	for _, p := range recs {
		b, _ := os.ReadFile(p)
		var r sourceRecord
		if json.Unmarshal(b, &r) != nil || all || (!exists(c.rawPath(r.SHA256)) && !exists(c.downloadPath(r.SHA256, true)) && !exists(c.downloadPath(r.SHA256, false))) {
			os.Remove(p)
		}
	}
	return freed, nil
}
