package outdir

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/pibake/pibake/builder/outdir/seam"
)

// Beside the nodes' files, an output directory holds build-wide records
// (issue 26): delta.json, what the build changed in each image against
// the base, and provenance.json, how the build was made, whose subjects
// are every other file SHA256SUMS lists. Both describe all the nodes at
// once, so they are written after the nodes are published, and listed in
// SHA256SUMS (through manifest.json's records) only while they describe
// the nodes listed:
//
//  1. a node's change unlists the records with the node (journal.go's
//     step 2, or step 5 for a new node), in the same write of SHA256SUMS
//     and manifest.json;
//  2. SetRecords unlists whatever records are still listed, writes the
//     new ones atomically (a file's signature goes before the file), and
//     lists them;
//  3. Open's sweep deletes a record the manifest does not list (a run
//     stopped between 1 and 2), and a signature whose file is gone.
//
// So every file SHA256SUMS lists has its checksum at every instant, and
// a listed record always describes the listed nodes.

// Names of the build-wide records, in the order SetRecords writes them:
// provenance.json's subjects include delta.json.
const (
	DeltaFile      = "delta.json"
	ProvenanceFile = "provenance.json"
	// SigSuffix ends a signature's name (sign.SigSuffix).
	SigSuffix = ".sig"
)

// RecordFiles are the records' names, in the order they are written.
var RecordFiles = []string{DeltaFile, ProvenanceFile}

// Signed are the files a signing key signs: SHA256SUMS covers every
// file but itself, provenance.json is the attestation.
var Signed = []string{sumsFile, ProvenanceFile}

// RecordData is a record's content, to be written.
type RecordData struct {
	Name string
	Data []byte
}

// SetRecords writes the build-wide records for the nodes listed now.
// records is given every node file SHA256SUMS lists (name to SHA-256) and
// returns the records' contents, in RecordFiles' order; with no node
// listed it is not called and the records go. Records that already hold
// those bytes are left alone (with their signatures).
func (d *Dir) SetRecords(records func(listed map[string]string) ([]RecordData, error)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var data []RecordData
	if len(d.m.Nodes) > 0 {
		var err error
		if data, err = records(d.nodeSums()); err != nil {
			return err
		}
	}
	want := make([]Record, len(data))
	for i, r := range data {
		if !slices.Contains(RecordFiles, r.Name) {
			return fmt.Errorf("record %s: not one of %v", r.Name, RecordFiles)
		}
		sum := sha256.Sum256(r.Data)
		want[i] = Record{Name: r.Name, SHA256: hex.EncodeToString(sum[:])}
	}
	if slices.Equal(want, d.m.Records) && d.recordsIntact() {
		return nil
	}
	if len(d.m.Records) > 0 {
		d.m.Records = nil
		if err := d.write(); err != nil {
			return err
		}
	}
	for _, name := range RecordFiles {
		if !slices.ContainsFunc(data, func(r RecordData) bool { return r.Name == name }) {
			if err := d.removeWithSignature(name); err != nil {
				return fmt.Errorf("remove %s: %w", name, DescribeWriteError(d.dir, err))
			}
		}
	}
	for _, r := range data {
		if err := d.writeIfChanged(r.Name, r.Data, 0o644); err != nil {
			return err
		}
	}
	d.m.Records = want
	return d.write()
}

// nodeSums are the node files SHA256SUMS lists, name to SHA-256.
func (d *Dir) nodeSums() map[string]string {
	sums := map[string]string{}
	for _, n := range d.m.Nodes {
		sums[n.File] = n.SHA256
		if n.BmapSHA256 != "" {
			sums[n.Bmap] = n.BmapSHA256
		}
		if n.XZ != "" {
			sums[n.XZ] = n.XZSHA256
		}
		if n.SBOM != "" {
			sums[n.SBOM] = n.SBOMSHA256
		}
	}
	return sums
}

// recordsIntact reports whether every listed record is there with its
// checksum.
func (d *Dir) recordsIntact() bool {
	for _, r := range d.m.Records {
		b, err := os.ReadFile(d.path(r.Name))
		if err != nil {
			return false
		}
		if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != r.SHA256 {
			return false
		}
	}
	return true
}

// Record reads a listed record, checked against its listed checksum; a
// record not listed (or not intact) is os.ErrNotExist.
func (d *Dir) Record(name string) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return ReadRecord(d.dir, d.m, name)
}

// ReadRecord reads a record of the output directory dir (manifest m), checked against m's checksum.
func ReadRecord(dir string, m Manifest, name string) ([]byte, error) {
	i := slices.IndexFunc(m.Records, func(r Record) bool { return r.Name == name })
	if i < 0 {
		return nil, fmt.Errorf("%s lists no %s: %w", filepath.Join(dir, manifestFile), name, os.ErrNotExist)
	}
	p := filepath.Join(dir, name)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != m.Records[i].SHA256 {
		return nil, fmt.Errorf("%s does not have the checksum its manifest.json lists: %w", p, os.ErrNotExist)
	}
	return b, nil
}

// removeWithSignature removes a file of the directory and its signature,
// the signature first.
func (d *Dir) removeWithSignature(name string) error {
	if err := seam.RemoveIfThere(d.fs, d.path(name+SigSuffix)); err != nil {
		return err
	}
	return seam.RemoveIfThere(d.fs, d.path(name))
}

// sweepRecords removes the records the manifest does not list, and
// signatures whose file is not there.
func (d *Dir) sweepRecords() error {
	for _, name := range RecordFiles {
		if slices.ContainsFunc(d.m.Records, func(r Record) bool { return r.Name == name }) {
			continue
		}
		if _, err := os.Lstat(d.path(name)); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := d.removeWithSignature(name); err != nil {
			return fmt.Errorf("remove %s left by an interrupted build: %w", name, err)
		}
		d.logf("removed %s, left by an interrupted build; a build writes it again", name)
	}
	for _, name := range Signed {
		_, errSig := os.Lstat(d.path(name + SigSuffix))
		if _, err := os.Lstat(d.path(name)); errSig == nil && errors.Is(err, os.ErrNotExist) {
			if err := seam.RemoveIfThere(d.fs, d.path(name+SigSuffix)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Sign writes a signature of each of Signed, made by sign from the file's
// bytes, as <name>.sig. Only a build or merge that ends signs: every
// change rewrites SHA256SUMS, which removes its signature.
func (d *Dir) Sign(sign func(data []byte) ([]byte, error)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.m.Nodes) == 0 {
		return errors.New("sign: the output directory lists no node; there is nothing to sign")
	}
	for _, name := range Signed {
		data, err := os.ReadFile(d.path(name))
		if err != nil {
			return fmt.Errorf("sign %s: %w", name, err)
		}
		sig, err := sign(data)
		if err != nil {
			return fmt.Errorf("sign %s: %w", name, err)
		}
		if old, err := os.ReadFile(d.path(name + SigSuffix)); err == nil && bytes.Equal(old, sig) {
			continue // ed25519 and RSA sign the same bytes the same: nothing to write
		}
		if err := seam.WriteAtomic(d.fs, d.path(name+SigSuffix), sig, 0o644); err != nil {
			return fmt.Errorf("sign %s: %w", name, DescribeWriteError(d.dir, err))
		}
	}
	return nil
}
