package base

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pibake/pibake/internal/atomicfile"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/flock"
)

// Cache is the content-addressed store of base images:
//
//	downloads/<sha256>.img.xz   verified downloads, named by their SHA-256
//	raw/<sha256>.img            decompressed images, named by the download's SHA-256
//	raw/<sha256>.<encoder>.<head>.img.xz  a multi-block .xz of a raw image, for --compress
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
	l, err := flock.Acquire(ctx, c.path("lock"), flock.Exclusive, true, func(holder string) {
		logf("waiting for another pibake that is using the cache %s (%s)", c.Dir, holder)
	})
	if err != nil {
		return nil, fmt.Errorf("lock cache %s: %w", c.Dir, err)
	}
	return func() { l.Unlock() }, nil
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

// BlocksPath is where the cache keeps a multi-block .xz made by encoder
// (a name of letters, digits, dots and dashes) from the image of this
// SHA-256 (a raw image, or a download's), its first block ending at head,
// beside its raw image, for --compress to copy blocks from
// (nodeimage.BaseBlocks).
func (c Cache) BlocksPath(sha, encoder string, head int64) string {
	return c.path("raw", fmt.Sprintf("%s.%s.%d.img.xz", sha, encoder, head))
}

// Make makes the file at path (under the cache) with make, unless it is
// there: under the cache lock, so two pibake processes never make it
// twice, and written to a temporary name that make gets, synced, then
// renamed, so it appears only whole.
func (c Cache) Make(ctx context.Context, path string, logf func(string, ...any), make func(tmp string) error) error {
	unlock, err := c.lock(ctx, logf)
	if err != nil {
		return err
	}
	defer unlock()
	if files.Exists(path) {
		touch(path)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	tmp := path + ".tmp"
	os.Remove(tmp) // a crashed run's
	err = make(tmp)
	if err == nil {
		err = atomicfile.Sync(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func (c Cache) downloadPath(sha string, compressed bool) string {
	if compressed {
		return c.path("downloads", sha+".img.xz")
	}
	return c.path("downloads", sha+".img")
}

// touch marks an entry as used now, for prune.
func touch(p string) {
	now := time.Now()
	os.Chtimes(p, now, now)
}

// Entry is one cached image: a decompressed raw image, or an uncompressed
// download that serves as its own raw image.
type Entry struct {
	SHA256 string `json:"sha256"`
	Path   string `json:"path"`
	// Size is the apparent size; Allocated what it takes on disk (images
	// are sparse).
	Size      int64     `json:"size"`
	Allocated int64     `json:"allocated"`
	LastUsed  time.Time `json:"last_used"`
	Sources   []string  `json:"sources"`
	// InUse is true while a running build holds the image.
	InUse bool `json:"in_use"`
}

// List returns the cached images, most recently used first.
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
	var paths []string
	for _, pattern := range []string{c.path("raw", "*.img"), c.path("downloads", "*.img")} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			return nil, err
		}
		paths = append(paths, m...)
	}
	var out []Entry
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		sha := strings.TrimSuffix(filepath.Base(p), ".img")
		srcs := sources[sha]
		sort.Strings(srcs)
		out = append(out, Entry{SHA256: sha, Path: p, Size: fi.Size(), Allocated: allocated(fi), LastUsed: fi.ModTime(), Sources: srcs, InUse: inUse(p)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out, nil
}

// inUse reports whether a running build holds the file (Image.take).
func inUse(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	ok, err := flock.Try(f, flock.Exclusive)
	if ok {
		flock.Unlock(f)
	}
	return err == nil && !ok
}

// Prune removes partial and failed downloads, and every download and raw
// image not used for olderThan (every one with all), except those a
// running build holds. It returns the bytes freed on disk.
func (c Cache) Prune(ctx context.Context, olderThan time.Duration, all bool, logf func(string, ...any)) (int64, error) {
	unlock, err := c.lock(ctx, logf)
	if err != nil {
		return 0, err
	}
	defer unlock()
	cutoff := time.Now().Add(-olderThan)
	var freed int64
	for _, dir := range []string{"partial", "bad", "downloads", "raw", "ranges", "supply"} {
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
			p := c.path(dir, e.Name())
			stale := all || dir == "partial" || dir == "bad" || fi.ModTime().Before(cutoff)
			if dir == "ranges" || dir == "supply" {
				// Block-map sums and supply-chain facts of a base
				// (builder/inputs): stale with the base.
				sha := strings.TrimSuffix(e.Name(), ".json")
				stale = !files.Exists(c.rawPath(sha)) || all
			}
			switch {
			case !stale:
			case inUse(p):
				logf("kept %s: a running build uses it", p)
			default:
				if err := os.RemoveAll(p); err != nil {
					return freed, err
				}
				freed += allocated(fi)
				logf("removed %s", p)
			}
		}
	}
	// Records of sources whose image is gone.
	recs, _ := filepath.Glob(c.path("sources", "*.json"))
	for _, p := range recs {
		b, _ := os.ReadFile(p)
		var r sourceRecord
		if json.Unmarshal(b, &r) != nil || (!files.Exists(c.rawPath(r.SHA256)) && !files.Exists(c.downloadPath(r.SHA256, true)) && !files.Exists(c.downloadPath(r.SHA256, false))) {
			os.Remove(p)
		}
	}
	return freed, nil
}
