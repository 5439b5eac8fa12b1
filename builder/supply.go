package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync/atomic"
	"time"

	"github.com/pibake/pibake/builder/delta"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/builder/sbom"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/recipes"
)

// The supply chain of a build (issue 26, docs/supply-chain.md): every
// node's image gets an SBOM (<host>.cdx.json), published as one of its
// parts, and its changes against the base (a delta.Node) are kept for
// the build's records, delta.json and provenance.json, which are written
// once every node is published (outdir.SetRecords).

// nodeDelta records how the node's image, written under its temporary
// name, differs from the base, and keeps it for delta.json.
func (nb *nodeBuild) nodeDelta(ctx context.Context, path string, entry *outdir.Node) error {
	defer nb.opt.spent.since(func(s *supplySpent) *atomic.Int64 { return &s.delta }, time.Now())
	base := nb.s.Base
	n, err := delta.ForNode(ctx, base.Supply.Delta, base.Path, path, base.EditSpan)
	if err != nil {
		return fmt.Errorf("record its changes against the base: %w", err)
	}
	n.Hostname, n.File, n.SHA256 = entry.Hostname, entry.File, entry.SHA256
	nb.deltaMu.Lock()
	defer nb.deltaMu.Unlock()
	nb.deltas[entry.Hostname] = n
	return nil
}

// sbomPart writes the node's SBOM as a part, and names it in entry.
func (nb *nodeBuild) sbomPart(payload firstboot.Payload, imgPath string, entry *outdir.Node) (*outdir.Part, error) {
	defer nb.opt.spent.since(sbomAndRecords, time.Now())
	files, err := nb.payloadFiles(payload, imgPath)
	if err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	in := nb.sbomInput(entry)
	in.Payload = files
	in.K3s.Airgap = nb.airgapFiles(payload)
	doc, err := sbom.ForNode(in)
	if err != nil {
		return nil, err
	}
	p := nb.out.NewPart(outdir.SBOMFile(entry.Hostname))
	sum := sha256.Sum256(doc)
	p.SHA256 = hex.EncodeToString(sum[:])
	entry.SBOM, entry.SBOMSHA256 = p.Final, p.SHA256
	return p, p.Write(doc, 0o644)
}

// sbomInput is what the node's SBOM says besides its boot files.
func (nb *nodeBuild) sbomInput(entry *outdir.Node) sbom.Input {
	base, r, n := nb.s.Base, nb.r, nb.node
	rel := base.Release
	in := sbom.Input{
		PibakeVersion: nb.opt.Version, Cluster: r.Cluster.Name,
		Node:  sbom.Node{Hostname: n.Hostname, Role: string(n.Role), BuildID: outdir.BuildID(entry.Inputs)},
		Image: &sbom.File{Path: entry.File, SHA256: entry.SHA256, Size: entry.Size},
		Base: sbom.Base{Source: nb.imageSource(), URL: base.Image.FinalURL, SHA256: base.Image.SHA256,
			ImageSHA256: base.Supply.Delta.SHA256, Released: base.Stamp,
			OSID: rel.OSID, OSVersionID: rel.OSVersionID, PrettyName: rel.PrettyName, Codename: rel.Codename},
		Packages: base.Supply.Packages,
		K3s:      sbom.K3s{Version: r.Cluster.K3sVersion, Channel: nb.k3sChannel(), InstallScriptURL: r.Cluster.InstallScriptURL},
		Apt:      sbom.Apt{Packages: n.Apt.Packages, Upgrade: n.Apt.Upgrade, ModulesExtra: n.Apt.ModulesExtra},
	}
	if a := r.Cluster.Airgap; a != nil && a.InstallScript != "" {
		in.K3s.InstallScriptSHA256 = base.Airgap[a.InstallScript]
	}
	return in
}

// imageSource is the recipe's image.source (a lock file replaces it with
// the URL it pins; the lock's own record of it is what the recipe said).
func (b *build) imageSource() string {
	if l := b.opt.Lock; l != nil && b.opt.Image == "" {
		return l.Image.Source
	}
	return b.s.Base.Image.Source
}

// k3sChannel is the channel the recipe follows, also when a lock pinned
// its version.
func (b *build) k3sChannel() string {
	if l := b.opt.Lock; l != nil && l.K3s != nil {
		return l.K3s.Channel
	}
	return b.r.Cluster.K3sChannel
}

// payloadFiles are pibake's files on the node's boot partition, with
// their sums (none for a file holding a secret), and cmdline.txt and
// config.txt as the edit left them, read back from the image.
func (nb *nodeBuild) payloadFiles(payload firstboot.Payload, imgPath string) ([]sbom.File, error) {
	var out []sbom.File
	for _, f := range payload.Files {
		sf := sbom.File{Path: f.Path, Size: int64(len(f.Data)), Secret: f.Mode == 0o600}
		switch {
		case f.Source != "":
			fi, err := os.Stat(f.Source)
			if err != nil {
				return nil, err
			}
			sf.Size, sf.SHA256 = fi.Size(), nb.s.Base.Airgap[f.Source]
		case !sf.Secret:
			sum := sha256.Sum256(f.Data)
			sf.SHA256 = hex.EncodeToString(sum[:])
		}
		out = append(out, sf)
	}
	edited := []string{"cmdline.txt"}
	if payload.ConfigTxt != nil {
		edited = append(edited, "config.txt")
	}
	im, err := diskimg.Open(imgPath, false)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	for _, name := range edited {
		b, err := im.ReadBootFile(name)
		if err != nil {
			return nil, fmt.Errorf("read back %s: %w", name, err)
		}
		sum := sha256.Sum256(b)
		out = append(out, sbom.File{Path: name, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// airgapFiles are the air-gap files the payload carries.
func (nb *nodeBuild) airgapFiles(payload firstboot.Payload) []sbom.File {
	var out []sbom.File
	for _, f := range payload.Files {
		if f.Source == "" {
			continue
		}
		sf := sbom.File{Path: f.Path, SHA256: nb.s.Base.Airgap[f.Source]}
		if fi, err := os.Stat(f.Source); err == nil {
			sf.Size = fi.Size()
		}
		out = append(out, sf)
	}
	return out
}

func sbomAndRecords(s *supplySpent) *atomic.Int64 { return &s.sbomAndRecords }

// goVersion is the Go release pibake was built with.
func goVersion() string { return runtime.Version() }

// recipeName names the recipe in the provenance: its base name, the same
// wherever the shards of a build ran.
func recipeName(r *recipes.Recipe) string { return filepath.Base(r.Path) }
