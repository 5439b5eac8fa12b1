package builder

import (
	"bytes"
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
	"sync"

	"github.com/pibake/pibake/internal/atomicfile"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/flock"
)

// An output directory holds one consistent set: every image under a final
// name (<host>.img, .img.bmap, .img.xz) is complete and listed in
// SHA256SUMS and manifest.json with its true checksum, whatever stopped the
// build that wrote it. One build at a time writes it (a lock in
// .pibake/), and a node's files are published as one unit:
//
//  1. a journal names the node and the checksums of its new files;
//  2. the node's entry leaves SHA256SUMS and manifest.json;
//  3. its old files are deleted;
//  4. its new files are renamed into place, the image last;
//  5. its new entry joins SHA256SUMS and manifest.json;
//  6. the journal goes.
//
// Between 2 and 5 the node is simply not listed, so `sha256sum -c
// SHA256SUMS` passes at every instant. A build killed in between leaves the
// journal, and the next build (under the lock, before anything else)
// finishes the node's publication or removes its half-published files.

// Files in an output directory's .pibake folder.
const (
	stateDir    = ".pibake"
	lockFile    = ".pibake/lock"
	journalFile = ".pibake/publishing.json"
)

// Node states in manifest.json.
const (
	// StateCurrent: the image is built from the recipe and base as they are.
	StateCurrent = "current"
	// StateOutdated: the node's last good image; the recipe or base has
	// changed since, and this build did not rebuild it (it failed, or was
	// not selected with --node).
	StateOutdated = "outdated"
	// StateOrphan: the node is no longer in the recipe; its image stays
	// until a build with --prune.
	StateOrphan = "orphan"
)

// ErrOutputBusy is returned (wrapped) when another build holds the output
// directory and the caller did not ask to wait.
var ErrOutputBusy = errors.New("another pibake build is writing to the output directory")

// output is an open, locked output directory.
type output struct {
	dir  string
	lock *flock.Lock
	logf func(string, ...any)

	mu sync.Mutex
	// m is what manifest.json and SHA256SUMS say on disk now.
	m manifest
}

// openOutput creates and locks dir, finishes what a killed build left
// half-published, removes every .part file, and reads the manifest.
func openOutput(ctx context.Context, dir string, wait bool, logf func(string, ...any)) (*output, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", describeWriteError(dir, err))
	}
	lockPath := filepath.Join(dir, filepath.FromSlash(lockFile))
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o700); err != nil && !files.Exists(lockPath) {
		// A read-only directory without .pibake yet: lock the directory.
		lockPath = dir
	}
	l, err := flock.Acquire(ctx, lockPath, flock.Exclusive, wait, func(holder string) {
		logf("waiting for another pibake build writing to %s (%s)", dir, holder)
	})
	if errors.Is(err, flock.ErrBusy) {
		return nil, fmt.Errorf("%w %s (%s); wait for it to finish, or run with --wait to queue behind it", ErrOutputBusy, dir, flock.Holder(lockPath))
	}
	if err != nil {
		return nil, fmt.Errorf("lock output directory: %w", err)
	}
	o := &output{dir: dir, lock: l, logf: logf, m: readManifest(dir)}
	if err := o.recover(); err != nil {
		l.Unlock()
		return nil, err
	}
	if err := o.sweep(); err != nil {
		l.Unlock()
		return nil, err
	}
	return o, nil
}

func (o *output) close() { o.lock.Unlock() }

func (o *output) path(name string) string { return filepath.Join(o.dir, filepath.FromSlash(name)) }

// sweep removes what interrupted builds leave under temporary names.
func (o *output) sweep() error {
	for _, pattern := range []string{"*.part", atomicfile.TempPattern, stateDir + "/" + atomicfile.TempPattern, CADir + "/" + atomicfile.TempPattern, CADir + "/etcd/" + atomicfile.TempPattern} {
		left, _ := filepath.Glob(filepath.Join(o.dir, filepath.FromSlash(pattern)))
		for _, p := range left {
			if err := os.RemoveAll(p); err != nil {
				return fmt.Errorf("remove %s left by an interrupted build: %w", p, err)
			}
			o.logf("removed %s, left by an interrupted build", filepath.Base(p))
		}
	}
	return nil
}

// nodeFiles are the final names of a node's files.
func nodeFiles(host string) (img, bmap, xz string) {
	return host + ".img", host + ".img.bmap", host + ".img.xz"
}

// publication is one node's new files, ready under temporary names.
type publication struct {
	Entry manifestNode `json:"entry"`
	// Parts maps each final name to its temporary name and checksum.
	Parts map[string]part `json:"parts"`
}

type part struct {
	Temp   string `json:"temp"`
	SHA256 string `json:"sha256"`
}

// publish puts a node's new files in place of its old ones (see the
// package comment on output directories for the steps).
func (o *output) publish(p publication) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	host := p.Entry.Hostname
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(o.path(journalFile), b, 0o600); err != nil {
		return fmt.Errorf("publish %s: %w", host, err)
	}
	if err := o.unlist(host); err != nil {
		return err
	}
	img, bmap, xz := nodeFiles(host)
	for _, name := range []string{xz, bmap, img} {
		if err := removeFile(o.path(name)); err != nil {
			return fmt.Errorf("publish %s: %w", host, err)
		}
	}
	for _, name := range []string{xz, bmap, img} { // the image last
		pt, ok := p.Parts[name]
		if !ok {
			continue
		}
		if err := os.Rename(o.path(pt.Temp), o.path(name)); err != nil {
			return fmt.Errorf("publish %s: %w", host, err)
		}
	}
	if err := atomicfile.SyncDir(o.dir); err != nil {
		return fmt.Errorf("publish %s: %w", host, err)
	}
	o.m.set(p.Entry)
	if err := o.write(); err != nil {
		return err
	}
	return removeFile(o.path(journalFile))
}

// unlist takes a node out of SHA256SUMS and manifest.json.
func (o *output) unlist(host string) error {
	if o.m.find(host) == nil {
		return nil
	}
	o.m.remove(host)
	return o.write()
}

// remove deletes a node's files, unlisting them first.
func (o *output) remove(host string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.unlist(host); err != nil {
		return err
	}
	img, bmap, xz := nodeFiles(host)
	for _, name := range []string{img, bmap, xz} {
		if err := removeFile(o.path(name)); err != nil {
			return err
		}
	}
	return nil
}

// entry is a copy of host's manifest entry, read under the lock: other
// nodes' publications rewrite the manifest meanwhile.
func (o *output) entry(host string) (manifestNode, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.m.find(host); e != nil {
		return *e, true
	}
	return manifestNode{}, false
}

// dropXZ removes a node's .img.xz, which a build without compression
// would leave describing an older image.
func (o *output) dropXZ(host string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.m.find(host)
	if e == nil || e.XZ == "" {
		return nil
	}
	name := e.XZ
	e.XZ, e.XZSHA256, e.XZSize = "", "", 0
	if err := o.write(); err != nil {
		return err
	}
	return removeFile(o.path(name))
}

// update replaces the manifest's build-wide fields and node entries
// (states, orphans) and writes it when anything changed.
func (o *output) update(f func(m *manifest)) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	f(&o.m)
	return o.write()
}

// write writes SHA256SUMS and manifest.json for o.m, each atomically and
// only when its content changes: a build that changes nothing writes
// nothing, so it also succeeds in a read-only directory.
func (o *output) write() error {
	sort.Slice(o.m.Nodes, func(i, j int) bool { return o.m.Nodes[i].Hostname < o.m.Nodes[j].Hostname })
	var sums strings.Builder
	for _, n := range o.m.Nodes {
		fmt.Fprintf(&sums, "%s  %s\n", n.SHA256, n.File)
		if n.XZ != "" {
			fmt.Fprintf(&sums, "%s  %s\n", n.XZSHA256, n.XZ)
		}
	}
	nodes := o.m.Nodes
	if nodes == nil {
		o.m.Nodes = []manifestNode{}
	}
	b, err := json.MarshalIndent(o.m, "", "  ")
	o.m.Nodes = nodes
	if err != nil {
		return err
	}
	osl, err := osList(o.dir, &o.m)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"SHA256SUMS", []byte(sums.String())}, {"manifest.json", append(b, '\n')}, {OSListFile, osl}} {
		if old, err := os.ReadFile(o.path(f.name)); err == nil && bytes.Equal(old, f.data) {
			continue
		}
		if err := atomicfile.WriteFile(o.path(f.name), f.data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", f.name, describeWriteError(o.dir, err))
		}
	}
	return nil
}

// recover finishes, or undoes, a publication a killed build left in the
// journal. While the node is still listed, nothing of it was touched yet.
// Once unlisted, its image under the final name with the journal's
// checksum means every part was renamed into place (the image goes last):
// the node is listed again; anything less is removed, and the node is
// built again next time.
func (o *output) recover() error {
	b, err := os.ReadFile(o.path(journalFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", journalFile, err)
	}
	var p publication
	if json.Unmarshal(b, &p) != nil || p.Entry.Hostname == "" || o.m.find(p.Entry.Hostname) != nil {
		return removeFile(o.path(journalFile))
	}
	host := p.Entry.Hostname
	img, bmap, xz := nodeFiles(host)
	complete := false
	if files.Exists(o.path(img)) {
		sum, _, err := files.SHA256(context.Background(), o.path(img))
		if err != nil {
			return fmt.Errorf("check %s after an interrupted build: %w", img, err)
		}
		complete = sum == p.Parts[img].SHA256
	}
	if complete {
		o.m.set(p.Entry)
		o.logf("%s: finished publishing what an interrupted build had written", host)
	} else {
		for _, name := range []string{img, bmap, xz} {
			if err := removeFile(o.path(name)); err != nil {
				return err
			}
		}
		o.logf("%s: removed the half-published files of an interrupted build; it will be built again", host)
	}
	if err := o.write(); err != nil {
		return err
	}
	return removeFile(o.path(journalFile))
}

func removeFile(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// tokenID identifies a generated token in manifest.json without revealing
// it: a generated token is 32 random bytes, so its hash says nothing.
func tokenID(tok string) string {
	sum := sha256.Sum256([]byte("pibake generated token\x00" + tok))
	return hex.EncodeToString(sum[:8])
}
