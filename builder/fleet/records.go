package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/pibake/pibake/builder/delta"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/builder/provenance"
	"github.com/pibake/pibake/builder/sign"
)

// Records are a build's delta.json and provenance.json for the node files
// an output directory lists (listed: name to SHA-256; outdir.SetRecords
// passes them): delta.json records rec's nodes, and provenance.json,
// made by prov, has every listed file and delta.json as its subjects. A
// build and a merge make them the same way, so merged shards give an
// unsharded build's bytes.
func Records(rec *delta.Record, listed map[string]string, prov func([]provenance.Artifact) ([]byte, error)) ([]outdir.RecordData, error) {
	d, err := rec.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", delta.File, err)
	}
	sum := sha256.Sum256(d)
	subjects := []provenance.Artifact{{Name: outdir.DeltaFile, SHA256: hex.EncodeToString(sum[:])}}
	for _, name := range slices.Sorted(maps.Keys(listed)) {
		subjects = append(subjects, provenance.Artifact{Name: name, SHA256: listed[name]})
	}
	p, err := prov(subjects)
	if err != nil {
		return nil, err
	}
	return []outdir.RecordData{{Name: outdir.DeltaFile, Data: d}, {Name: outdir.ProvenanceFile, Data: p}}, nil
}

// mergeRecords writes the merged directory's records: delta.json, every
// shard's nodes in one record (delta.Record.Merge), and provenance.json
// rebuilt over the merged files from the shards' (which must describe one
// build), never a merge of documents.
func mergeRecords(ctx context.Context, d *outdir.Dir, shards []string, ms []outdir.Manifest) error {
	var rec *delta.Record
	var prov []byte
	for i, m := range ms {
		if len(m.Nodes) == 0 {
			continue // a shard that built nothing has no records
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r, p, err := shardRecords(shards[i], m)
		if err != nil {
			return err
		}
		if rec == nil {
			rec, prov = r, p
			continue
		}
		if err := rec.Merge(r); err != nil {
			return fmt.Errorf("merge: %s: %w", shards[i], err)
		}
		if same, err := provenance.SameBuild(prov, p); err != nil || !same {
			return fmt.Errorf("merge: the %s of %s describes another build than the other shards' (other options, pibake or Go); build every shard the same way", outdir.ProvenanceFile, shards[i])
		}
	}
	if rec == nil {
		return d.SetRecords(func(map[string]string) ([]outdir.RecordData, error) { return nil, nil })
	}
	return d.SetRecords(func(listed map[string]string) ([]outdir.RecordData, error) {
		return Records(rec, listed, func(subjects []provenance.Artifact) ([]byte, error) {
			return provenance.Resubject(prov, subjects)
		})
	})
}

// shardRecords reads a shard's delta.json and provenance.json, checked
// against its manifest.
func shardRecords(shard string, m outdir.Manifest) (*delta.Record, []byte, error) {
	again := "; build the shard again with this pibake"
	d, err := outdir.ReadRecord(shard, m, outdir.DeltaFile)
	if err != nil {
		return nil, nil, fmt.Errorf("merge: %w%s", err, again)
	}
	rec, err := delta.Parse(d)
	if err != nil {
		return nil, nil, fmt.Errorf("merge: %s: %w%s", shard, err, again)
	}
	p, err := outdir.ReadRecord(shard, m, outdir.ProvenanceFile)
	if err != nil {
		return nil, nil, fmt.Errorf("merge: %w%s", err, again)
	}
	return rec, p, nil
}

// ErrShardSigns is returned (wrapped) for a shard build asked to sign:
// the signature would cover one shard's SHA256SUMS, which the merge
// rewrites.
var ErrShardSigns = errors.New("a shard does not sign (the merge rewrites SHA256SUMS); sign once with pibake merge --sign-key")

// LoadSigner loads a build's or merge's signing key (sign.Load) before
// any work starts, so that its passphrase is asked now, on the terminal
// unless prompt is given; nil when key is "". A nil *sign.Signer closes.
func LoadSigner(key string, prompt sign.Prompt) (*sign.Signer, error) {
	if key == "" {
		return nil, nil
	}
	if prompt == nil {
		prompt = sign.TerminalPrompt
	}
	return sign.Load(key, prompt)
}
