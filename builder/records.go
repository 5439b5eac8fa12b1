package builder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pibake/pibake/builder/delta"
	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/builder/provenance"
	"github.com/pibake/pibake/internal/files"
)

// readDelta keeps the directory's delta.json as the run found it (when
// listed and intact): the nodes this run does not build keep their
// records from it.
func (b *build) readDelta() {
	if data, err := b.out.Record(outdir.DeltaFile); err == nil {
		b.prevDelta, _ = delta.Parse(data)
	}
}

// writeRecords writes delta.json and provenance.json for every node the
// directory lists. A node built from another base image than this run's
// (outdated, not selected) cannot be recorded against this base: then the
// directory has no records until it is built again.
func (b *build) writeRecords(ctx context.Context) error {
	defer b.opt.spent.since(sbomAndRecords, time.Now())
	rec, err := b.deltaRecord(ctx, b.out.Manifest())
	if err != nil {
		b.s.Logf("warning: %v; %s and %s are not written (build every node again to write them)", err, outdir.DeltaFile, outdir.ProvenanceFile)
		return b.out.SetRecords(func(map[string]string) ([]outdir.RecordData, error) { return nil, nil })
	}
	in, err := b.provenanceInput(ctx)
	if err != nil {
		return err
	}
	return b.out.SetRecords(func(listed map[string]string) ([]outdir.RecordData, error) {
		return fleet.Records(rec, listed, func(subjects []provenance.Artifact) ([]byte, error) {
			in.Subjects = subjects
			return provenance.Build(in)
		})
	})
}

// deltaRecord is delta.json for the nodes m lists: this run's records,
// the previous delta.json's for the nodes it did not build, and, failing
// both, the node's image compared with the base again.
func (b *build) deltaRecord(ctx context.Context, m outdir.Manifest) (*delta.Record, error) {
	base := b.s.Base
	rec := &delta.Record{Base: *base.Supply.Delta}
	for _, e := range m.Nodes {
		n := b.deltas[e.Hostname]
		if n == nil || n.SHA256 != e.SHA256 {
			n = nil
			if p := b.prevDelta; p != nil && p.Base.SHA256 == rec.Base.SHA256 {
				if old := p.Find(e.Hostname); old != nil && old.SHA256 == e.SHA256 && old.File == e.File {
					n = old
				}
			}
		}
		if n == nil {
			var err error
			if n, err = delta.ForNode(ctx, base.Supply.Delta, base.Path, b.out.File(e.File), base.EditSpan); err != nil {
				return nil, fmt.Errorf("node %s: %w", e.Hostname, err)
			}
			n.Hostname, n.File, n.SHA256 = e.Hostname, e.File, e.SHA256
		}
		rec.Nodes = append(rec.Nodes, *n)
	}
	return rec, nil
}

// provenanceInput is what provenance.json says of the build, its subjects
// aside. Options are only those that change the outputs: never --shard,
// --node, --jobs or --force, so a merge of shards says what an unsharded
// build says.
func (b *build) provenanceInput(ctx context.Context) (provenance.Input, error) {
	base, c := b.s.Base, b.r.Cluster
	in := provenance.Input{
		PibakeVersion: b.opt.Version, GoVersion: goVersion(), Cluster: c.Name,
		Recipe: recipeName(b.r), RecipeHash: b.s.RecipeHash(),
		Base:          provenance.Artifact{URI: base.Image.FinalURL, SHA256: base.Image.SHA256},
		BaseRawSHA256: base.Supply.Delta.SHA256, BaseSource: b.imageSource(),
		BaseReleased: base.Stamp.UTC().Format(time.DateOnly),
		K3sVersion:   c.K3sVersion, K3sChannel: b.k3sChannel(),
		InstallScript: &provenance.Artifact{URI: c.InstallScriptURL},
		Options:       map[string]any{"compress": b.s.Compress},
	}
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		in.Options["source_date_epoch"] = v
	}
	if l := b.opt.Lock; l != nil {
		sum, _, err := files.SHA256(ctx, l.Path)
		if err != nil {
			return in, fmt.Errorf("provenance: lock file: %w", err)
		}
		in.Lock = &provenance.Artifact{Name: filepath.Base(l.Path), SHA256: sum}
	}
	if a := c.Airgap; a != nil {
		in.InstallScript.SHA256 = base.Airgap[a.InstallScript]
		for _, p := range []string{a.K3sBinary, a.Images, a.InstallScript} {
			if p != "" {
				in.Airgap = append(in.Airgap, provenance.Artifact{Name: filepath.Base(p), SHA256: base.Airgap[p]})
			}
		}
	}
	return in, nil
}

// sign signs SHA256SUMS and provenance.json with the build's key.
func (b *build) sign() error {
	if b.signer == nil {
		return nil
	}
	if err := b.out.Sign(b.signer.Bytes); err != nil {
		return err
	}
	b.s.Logf("signed SHA256SUMS and %s", outdir.ProvenanceFile)
	return nil
}
