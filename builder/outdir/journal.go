package outdir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/pibake/pibake/builder/outdir/seam"
	"github.com/pibake/pibake/internal/files"
)

// A node's files change as one unit, through a journal:
//
//  1. the journal names the node, its entry after the change (none when
//     it is removed), every file it will have with its checksum, and the
//     parts that bring new files under temporary names (already written
//     and synced);
//  2. the node leaves SHA256SUMS and manifest.json;
//  3. its files the new entry does not name are deleted;
//  4. the parts are renamed into place, the image last;
//  5. its new entry joins SHA256SUMS and manifest.json;
//  6. the journal goes.
//
// Between 2 and 5 the node is simply not listed, so `sha256sum -c
// SHA256SUMS` passes at every instant. A run killed after 1 leaves the
// journal, and the next run (under the lock, before anything else) rolls
// it forward: it unlists the node, renames the parts still under
// temporary names, deletes what the entry does not name, and checks that
// every file the journal names is at its final name with its checksum;
// then the node is listed, or, when one is missing or different, all its
// files go and the next build makes it again. Rolling forward is the same
// whether the old files were still there or not: an image byte-identical
// to the old one (a rebuild with --force, or with --compress newly asked)
// is published with all its parts, not taken for complete while its
// new .img.xz still lies under its temporary name.

// journalPrefix names a node's journal: .pibake/publishing-<host>.json,
// one per node, so that a change that failed (and left its journal for
// the next run) does not stop the others. ".pibake/publishing.json" is
// the one journal of pibake before issue 22, still rolled forward.
const journalPrefix = ".pibake/publishing"

func journalFile(host string) string { return journalPrefix + "-" + host + ".json" }

// journal is a change to one node in progress.
type journal struct {
	Host string `json:"host,omitempty"`
	// Entry is the node's entry after the change; nil removes the node.
	Entry *Node `json:"entry"`
	// Files maps every file of the node after the change to its
	// checksum ("" for one that need only be there).
	Files map[string]string `json:"files,omitempty"`
	// Parts maps the final name of each new file to its part.
	Parts map[string]journalPart `json:"parts"`

	file string // where it is, relative to the directory
}

type journalPart struct {
	Temp   string `json:"temp"`
	SHA256 string `json:"sha256"`
}

func (j *journal) host() string {
	if j.Host == "" && j.Entry != nil {
		return j.Entry.Hostname // a journal written by pibake before issue 22
	}
	return j.Host
}

// files is what the node has after the change: the journal's Files, or,
// in a journal without them, the entry's files with the parts' sums.
func (j *journal) files() map[string]string {
	if j.Files != nil || j.Entry == nil {
		return j.Files
	}
	fl := map[string]string{j.Entry.File: j.Entry.SHA256, j.Entry.Bmap: j.Parts[j.Entry.Bmap].SHA256}
	if j.Entry.XZ != "" {
		fl[j.Entry.XZ] = j.Entry.XZSHA256
	}
	if j.Entry.SBOM != "" {
		fl[j.Entry.SBOM] = j.Entry.SBOMSHA256
	}
	return fl
}

// Part is a new file of a node being written under a temporary name in
// the directory, until Publish renames it into place.
type Part struct {
	d *Dir
	// Final is the file's name once published (<host>.img, say).
	Final string
	// SHA256 is the file's checksum, set by the caller once written.
	SHA256 string
}

// NewPart names a part for the file final: final + ".part", which the
// sweep removes if nothing publishes it.
func (d *Dir) NewPart(final string) *Part { return &Part{d: d, Final: final} }

// Temp is the part's name in the directory.
func (p *Part) Temp() string { return p.Final + ".part" }

// Path is where the part is.
func (p *Part) Path() string { return p.d.path(p.Temp()) }

// Create creates the part (mode 0600: images hold the cluster token) for
// the caller to write and sync.
func (p *Part) Create() (*os.File, error) { return p.d.fs.Create(p.Path(), 0o600) }

// Write writes the part whole and syncs it.
func (p *Part) Write(data []byte, perm os.FileMode) error {
	if err := p.d.fs.WriteFile(p.Path(), data, perm); err != nil {
		return err
	}
	return p.d.fs.Sync(p.Path())
}

// Sync flushes the part the caller wrote.
func (p *Part) Sync() error { return p.d.fs.Sync(p.Path()) }

// Discard removes the part, if it is there.
func (p *Part) Discard() error { return seam.RemoveIfThere(p.d.fs, p.Path()) }

// Publish puts a node's new files, written and synced under their
// temporary names, in place of its old ones, and lists entry. Files of
// the entry that no part brings stay as they are. The parts' checksums
// must be set; the image's and .img.xz's must be the entry's. The parts
// are Publish's from then on: a failure before the journal is written
// removes them; after it, they stay for the next run to finish with.
func (d *Dir) Publish(entry Node, parts ...*Part) error {
	j := journal{Host: entry.Hostname, Entry: &entry, Files: map[string]string{}, Parts: map[string]journalPart{}}
	for _, p := range parts {
		j.Parts[p.Final] = journalPart{Temp: p.Temp(), SHA256: p.SHA256}
	}
	for name, sum := range map[string]string{entry.File: entry.SHA256, entry.Bmap: entry.BmapSHA256, entry.XZ: entry.XZSHA256, entry.SBOM: entry.SBOMSHA256} {
		if name == "" {
			continue
		}
		if p, ok := j.Parts[name]; ok {
			if sum != "" && p.SHA256 != sum {
				discard(parts)
				return fmt.Errorf("publish %s: part %s has sha256 %s, the entry says %s", entry.Hostname, p.Temp, p.SHA256, sum)
			}
			sum = p.SHA256
		}
		j.Files[name] = sum
	}
	return d.change(j, parts)
}

func discard(parts []*Part) {
	for _, p := range parts {
		p.Discard()
	}
}

// Remove deletes a node's files, unlisting them first.
func (d *Dir) Remove(host string) error {
	return d.change(journal{Host: host, Files: map[string]string{}, Parts: map[string]journalPart{}}, nil)
}

// DropXZ removes a node's .img.xz, which a build without compression
// would leave describing an older image: the node is published again
// without it.
func (d *Dir) DropXZ(host string) error {
	e, ok := d.Entry(host)
	if !ok || e.XZ == "" {
		return nil
	}
	e.XZ, e.XZSHA256, e.XZSize = "", "", 0
	return d.Publish(e)
}

// change applies a journal: the steps in the comment above. When a step
// fails it rolls forward from what is on disk, as the next run would:
// the node is published, or its files and parts go; when even that
// fails, its journal stays for the next run, and other nodes go on.
func (d *Dir) change(j journal, parts []*Part) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	host := j.host()
	j.file = journalFile(host)
	b, err := json.Marshal(j)
	if err == nil {
		err = seam.MkdirIfMissing(d.fs, d.path(stateDir), 0o700)
	}
	if err == nil {
		err = seam.WriteAtomic(d.fs, d.path(j.file), b, 0o600)
	}
	if err != nil {
		discard(parts)
		return fmt.Errorf("publish %s: %w", host, DescribeWriteError(d.dir, err))
	}
	err = d.apply(j)
	if err == nil && d.complete(context.Background(), j, false) {
		if err = d.finish(j); err == nil {
			return nil
		}
	} else if err == nil {
		err = errors.New("a file went missing while it was published")
	}
	if rerr := d.rollForward(j); rerr != nil {
		d.logf("%s: %v; the next build finishes it", host, rerr)
	}
	return fmt.Errorf("publish %s: %w", host, DescribeWriteError(d.dir, err))
}

// apply does steps 2 to 4 of a journal; recovery repeats them, so each
// step finds what an earlier attempt did already.
func (d *Dir) apply(j journal) error {
	if err := d.unlist(j.host()); err != nil {
		return err
	}
	return d.replace(j)
}

// unlist takes a node out of SHA256SUMS and manifest.json, and the
// build-wide records with it: they describe every node as it was, and
// come back when SetRecords writes them for the nodes as they are.
func (d *Dir) unlist(host string) error {
	if d.m.Node(host) == nil {
		return nil
	}
	d.m.Remove(host)
	d.m.Records = nil
	return d.write()
}

// replace deletes the node's files the journal does not name and renames
// its parts into place, the image last.
func (d *Dir) replace(j journal) error {
	fl := j.files()
	names := nodeFileNames(j.host())
	for _, name := range names {
		if _, keep := fl[name]; !keep {
			if err := seam.RemoveIfThere(d.fs, d.path(name)); err != nil {
				return err
			}
		}
	}
	for _, name := range names { // the image last
		p, ok := j.Parts[name]
		if !ok {
			continue
		}
		if _, err := os.Lstat(d.path(p.Temp)); errors.Is(err, fs.ErrNotExist) {
			continue // renamed by the run that was killed
		}
		if err := d.fs.Rename(d.path(p.Temp), d.path(name)); err != nil {
			return err
		}
		// A part that is a hard link to the file already there (a shard
		// merged again) stays: rename(2) does nothing for two names of
		// one file.
		if err := seam.RemoveIfThere(d.fs, d.path(p.Temp)); err != nil {
			return err
		}
	}
	return d.fs.SyncDir(d.dir)
}

// complete reports whether every file the journal names is at its final
// name, and, with sums, has its checksum: recovery checks what a killed
// run left; a publication trusts the sums its parts were written with
// (hashing a 1.5 GiB image again would cost a second a node).
func (d *Dir) complete(ctx context.Context, j journal, sums bool) bool {
	for name, want := range j.files() {
		if !files.Exists(d.path(name)) {
			return false
		}
		if want == "" || !sums {
			continue
		}
		if sum, _, err := files.SHA256(ctx, d.path(name)); err != nil || sum != want {
			return false
		}
	}
	return true
}

// finish does steps 5 and 6: the new entry is listed and the journal
// goes.
func (d *Dir) finish(j journal) error {
	if j.Entry != nil {
		d.m.Set(*j.Entry)
		d.m.Records = nil // a new node too: they do not describe it
		if err := d.write(); err != nil {
			return err
		}
	}
	if err := seam.RemoveIfThere(d.fs, d.path(j.file)); err != nil {
		return err
	}
	return d.fs.SyncDir(d.path(stateDir))
}

// removeNode removes a node's parts and files, as many as it can.
func (d *Dir) removeNode(j journal) error {
	var first error
	names := nodeFileNames(j.host())
	for _, p := range j.Parts {
		names = append(names, p.Temp)
	}
	for _, name := range names {
		if err := seam.RemoveIfThere(d.fs, d.path(name)); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// recover rolls forward the changes killed (or failed) runs left in
// journals (see the comment above).
func (d *Dir) recover() error {
	names, _ := filepath.Glob(d.path(journalPrefix + "*.json"))
	slices.Sort(names)
	for _, p := range names {
		rel := stateDir + "/" + filepath.Base(p)
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read %s: %w", rel, err)
		}
		var j journal
		if json.Unmarshal(b, &j) != nil || j.host() == "" {
			d.logf("removed %s, which could not be read; the sweep removes what it named", rel)
			if err := seam.RemoveIfThere(d.fs, p); err != nil {
				return err
			}
			continue
		}
		j.file = rel
		if err := d.rollForward(j); err != nil {
			return fmt.Errorf("finish what an interrupted build left of %s: %w", j.host(), DescribeWriteError(d.dir, err))
		}
	}
	return nil
}

// rollForward finishes a change from whatever step it stopped at: the
// node is published whole, or its files and parts go and it is built
// again next time. While the node cannot be unlisted, or its files not
// removed, the journal stays for the next run.
func (d *Dir) rollForward(j journal) error {
	host := j.host()
	if err := d.unlist(host); err != nil {
		return err
	}
	err := d.replace(j)
	switch {
	case err == nil && j.Entry == nil:
		d.logf("%s: removed", host)
	case err == nil && d.complete(context.Background(), j, true):
		d.logf("%s: finished publishing what an interrupted build had written", host)
	default:
		if rerr := d.removeNode(j); rerr != nil {
			return errors.Join(err, rerr)
		}
		j.Entry = nil
		d.logf("%s: removed the half-published files of an interrupted build; it will be built again", host)
	}
	return d.finish(j)
}
