// Package outdir is pibake's output directory, and the only code that
// touches its files: the lock, the publication journal and its recovery,
// the sweep of what interrupted runs left, SHA256SUMS, manifest.json,
// os_list.json, the nodes' states, and the cluster's secrets kept in
// .pibake/ (token, CA, report key, node password generations). Build,
// flash, merge and init call its small API.
//
// An output directory holds one consistent set: every image under a final
// name (<host>.img, .img.bmap, .img.xz) is complete and listed in
// SHA256SUMS and manifest.json with its true checksum, whatever stopped
// the run that wrote it. One run at a time writes it (a lock in .pibake/),
// and a node's files change as one unit through a journal (journal.go).
// A directory without a node holds no SHA256SUMS (there is nothing to
// check) and a manifest.json whose nodes are [].
//
// Every step that changes the directory goes through a seam.FS, so
// that a test can stop the transaction after any step and check that the
// next run recovers.
package outdir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/pibake/pibake/builder/imager"
	"github.com/pibake/pibake/builder/outdir/seam"
	"github.com/pibake/pibake/internal/atomicfile"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/flock"
)

// Files of an output directory, relative to it.
const (
	stateDir = ".pibake"
	lockFile = ".pibake/lock"
	sumsFile = "SHA256SUMS"
	// OSListFile is the Raspberry Pi Imager repository beside the images.
	OSListFile = imager.File
)

// ErrBusy is returned (wrapped) when another run holds the output
// directory and the caller did not ask to wait.
var ErrBusy = errors.New("another pibake build is writing to the output directory")

// Options configure Open.
type Options struct {
	// Wait queues behind another run holding the directory instead of
	// failing at once.
	Wait bool
	// Logf receives what recovery and the sweep did.
	Logf func(format string, args ...any)
	// FS is where the directory's steps go; nil is the running system's.
	FS seam.FS
}

// Dir is an open, locked output directory.
type Dir struct {
	dir  string
	lock *flock.Lock
	logf func(string, ...any)
	fs   seam.FS

	mu sync.Mutex // serialises changes; guards m
	// m is what manifest.json says on disk now.
	m Manifest
}

// Open creates and locks dir, rolls forward what a killed run left in
// the journal, removes what interrupted runs left under temporary names,
// and brings SHA256SUMS and os_list.json in line with manifest.json.
func Open(ctx context.Context, dir string, opt Options) (*Dir, error) {
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.FS == nil {
		opt.FS = seam.OS{}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", DescribeWriteError(dir, err))
	}
	lockPath := filepath.Join(dir, filepath.FromSlash(lockFile))
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o700); err != nil && !files.Exists(lockPath) {
		// A read-only directory without .pibake yet: lock the directory.
		lockPath = dir
	}
	l, err := flock.Acquire(ctx, lockPath, flock.Exclusive, opt.Wait, func(holder string) {
		opt.Logf("waiting for another pibake build writing to %s (%s)", dir, holder)
	})
	if errors.Is(err, flock.ErrBusy) {
		return nil, fmt.Errorf("%w %s (%s); wait for it to finish, or run with --wait to queue behind it", ErrBusy, dir, flock.Holder(lockPath))
	}
	if err != nil {
		return nil, fmt.Errorf("lock output directory: %w", err)
	}
	d := &Dir{dir: dir, lock: l, logf: opt.Logf, fs: opt.FS, m: ReadManifest(dir)}
	if err := d.open(); err != nil {
		l.Unlock()
		return nil, err
	}
	return d, nil
}

func (d *Dir) open() error {
	if err := d.recover(); err != nil {
		return err
	}
	if err := d.sweep(); err != nil {
		return err
	}
	// A run killed between writing SHA256SUMS and manifest.json leaves
	// them disagreeing: manifest.json is the one the journal's steps
	// order by, so the others follow it. Nothing is written when they
	// agree (a read-only directory opens), or in a new directory.
	if !IsOutDir(d.dir) {
		return nil
	}
	return d.write()
}

// Close unlocks the directory, first removing records a stopped run left unlisted (else Open does).
func (d *Dir) Close() {
	d.mu.Lock()
	_ = d.sweepRecords()
	d.mu.Unlock()
	d.lock.Unlock()
}

// path is the path of a name in the directory.
func (d *Dir) path(name string) string { return filepath.Join(d.dir, filepath.FromSlash(name)) }

// File is the path of a node file (or the admin kubeconfig) in the
// directory, for reading it and for what the user is told.
func (d *Dir) File(name string) string { return d.path(name) }

// Manifest is a copy of what manifest.json says now.
func (d *Dir) Manifest() Manifest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m.Clone()
}

// Entry is a copy of host's manifest entry: other nodes' publications
// rewrite the manifest meanwhile.
func (d *Dir) Entry(host string) (Node, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e := d.m.Node(host); e != nil {
		return *e, true
	}
	return Node{}, false
}

// Update changes the manifest's build-wide fields, node states and flash
// records, and writes it (and SHA256SUMS and os_list.json) when anything
// changed. f must not add or remove nodes or change their files: that is
// Publish's and Remove's.
func (d *Dir) Update(f func(m *Manifest)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(&d.m)
	return d.write()
}

// Intact checks that a node's files listed in n are all there and its
// image still has its recorded checksum.
func (d *Dir) Intact(ctx context.Context, n Node) bool {
	if !files.Exists(d.path(n.Bmap)) || (n.XZ != "" && !files.Exists(d.path(n.XZ))) {
		return false
	}
	if n.SBOM != "" {
		if sum, _, err := files.SHA256(ctx, d.path(n.SBOM)); err != nil || sum != n.SBOMSHA256 {
			return false
		}
	}
	sum, _, err := files.SHA256(ctx, d.path(n.File))
	return err == nil && sum == n.SHA256
}

// IsOutDir reports whether dir holds a pibake manifest.json.
func IsOutDir(dir string) bool { return files.Exists(filepath.Join(dir, manifestFile)) }

// sweep removes what interrupted runs leave under temporary names, and
// the records and signatures they left unlisted (records.go).
func (d *Dir) sweep() error {
	if err := d.sweepRecords(); err != nil {
		return err
	}
	for _, pattern := range []string{"*.part", atomicfile.TempPattern, stateDir + "/" + atomicfile.TempPattern, CADir + "/" + atomicfile.TempPattern, CADir + "/etcd/" + atomicfile.TempPattern} {
		left, _ := filepath.Glob(filepath.Join(d.dir, filepath.FromSlash(pattern)))
		for _, p := range left {
			if err := d.fs.RemoveAll(p); err != nil {
				return fmt.Errorf("remove %s left by an interrupted build: %w", p, err)
			}
			d.logf("removed %s, left by an interrupted build", filepath.Base(p))
		}
	}
	return nil
}

// write writes SHA256SUMS, manifest.json and os_list.json for d.m, each
// atomically and only when its content changes: a run that changes
// nothing writes nothing, so it also succeeds in a read-only directory.
// SHA256SUMS goes first: while a node is being unlisted it leaves
// SHA256SUMS before manifest.json, and while listed it joins SHA256SUMS
// only once its files are in place. With no node there is no
// SHA256SUMS: an empty one fails `sha256sum -c` ("no properly formatted
// checksum lines found").
func (d *Dir) write() error {
	sort.Slice(d.m.Nodes, func(i, j int) bool { return d.m.Nodes[i].Hostname < d.m.Nodes[j].Hostname })
	var sums strings.Builder
	var images []imager.Image
	for _, n := range d.m.Nodes {
		fmt.Fprintf(&sums, "%s  %s\n", n.SHA256, n.File)
		if n.BmapSHA256 != "" {
			fmt.Fprintf(&sums, "%s  %s\n", n.BmapSHA256, n.Bmap)
		}
		if n.XZ != "" {
			fmt.Fprintf(&sums, "%s  %s\n", n.XZSHA256, n.XZ)
		}
		if n.SBOM != "" {
			fmt.Fprintf(&sums, "%s  %s\n", n.SBOMSHA256, n.SBOM)
		}
		images = append(images, imager.Image{
			Name: n.Hostname, Role: n.Role, Current: n.State == StateCurrent, State: n.State,
			File: n.File, Size: n.Size, SHA256: n.SHA256, XZ: n.XZ, XZSize: n.XZSize, XZSHA256: n.XZSHA256, Released: n.Released,
		})
	}
	if sums.Len() > 0 {
		for _, r := range d.m.Records {
			fmt.Fprintf(&sums, "%s  %s\n", r.SHA256, r.Name)
		}
	}
	m := d.m.Clone()
	if m.Nodes == nil {
		m.Nodes = []Node{}
	}
	man, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	osl, err := imager.List(d.dir, d.m.Cluster, images)
	if err != nil {
		return err
	}
	if sums.Len() == 0 {
		if err := d.removeWithSignature(sumsFile); err != nil {
			return fmt.Errorf("remove %s: %w", sumsFile, DescribeWriteError(d.dir, err))
		}
	} else if err := d.writeIfChanged(sumsFile, []byte(sums.String()), 0o644); err != nil {
		return err
	}
	if err := d.writeIfChanged(manifestFile, append(man, '\n'), 0o644); err != nil {
		return err
	}
	return d.writeIfChanged(OSListFile, osl, 0o644)
}

// writeIfChanged writes a file of the directory atomically, unless it
// already holds data. A signature of the file goes first: it signed what
// the file held before.
func (d *Dir) writeIfChanged(name string, data []byte, perm os.FileMode) error {
	if old, err := os.ReadFile(d.path(name)); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := seam.RemoveIfThere(d.fs, d.path(name+SigSuffix)); err != nil {
		return fmt.Errorf("remove %s: %w", name+SigSuffix, DescribeWriteError(d.dir, err))
	}
	if err := seam.WriteAtomic(d.fs, d.path(name), data, perm); err != nil {
		return fmt.Errorf("write %s: %w", name, DescribeWriteError(d.dir, err))
	}
	return nil
}

// DescribeWriteError adds what to do when the disk holding dir is full.
func DescribeWriteError(dir string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: the disk holding %s is full; free space or choose another --out", err, dir)
	}
	return err
}
