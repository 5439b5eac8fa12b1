package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/pibake/pibake/builder/nodeimage"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/progress"
	"github.com/pibake/pibake/recipes"
)

// nodeBuild builds one node's image.
type nodeBuild struct {
	*build
	node *recipes.Node
}

// make builds the node's files under temporary names, ready to publish
// (p), or finds it unchanged or failed (res, p nil). Failures are in the
// result: one node's failure does not stop the others.
func (nb *nodeBuild) make(ctx context.Context) (p *pending, res NodeResult) {
	if err := ctx.Err(); err != nil {
		return nil, nb.failed(err)
	}
	start := time.Now()
	inputs, err := nb.s.Inputs(*nb.node)
	if err != nil {
		return nil, nb.failed(err)
	}
	if prev, ok, err := nb.unchanged(ctx, inputs); err != nil {
		return nil, nb.failed(err)
	} else if ok {
		return nil, nb.result(prev, StatusUnchanged)
	}
	entry, err := nb.entry(inputs)
	if err != nil {
		return nil, nb.failed(err)
	}
	payload, err := nb.s.Payload(nb.node, inputs)
	if err != nil {
		return nil, nb.failed(err)
	}
	p = &pending{nb: nb, entry: entry, start: start}
	if err := nb.makeParts(ctx, payload, p); err != nil {
		p.discard()
		return nil, nb.failed(err)
	}
	return p, NodeResult{}
}

// pending is a node whose image is written, synced and hashed under its
// temporary name, and whose block map is made: the publisher's to write
// and publish.
type pending struct {
	i     int // the node's place in the results
	nb    *nodeBuild
	entry outdir.Node
	parts []*outdir.Part
	bmap  []byte
	start time.Time
}

// publish writes the node's block map and publishes the node. Past the
// interrupt check the node is published whole, even on an interrupt: its
// files are complete.
func (p *pending) publish(ctx context.Context) NodeResult {
	nb := p.nb
	if err := ctx.Err(); err != nil {
		p.discard()
		return nb.failed(err)
	}
	if err := p.writeBmap(); err != nil {
		p.discard()
		return nb.failed(err)
	}
	if err := nb.out.Publish(p.entry, p.parts...); err != nil {
		return nb.failed(err)
	}
	nb.s.Logf("%s: done in %s, sha256 %s…", p.entry.Hostname, time.Since(p.start).Round(10*time.Millisecond), p.entry.SHA256[:12])
	nb.opt.Event(p.entry.Hostname, StagePublished)
	return nb.result(p.entry, StatusBuilt)
}

// writeBmap writes the block map as a part, synced.
func (p *pending) writeBmap() error {
	_, bmapName, _ := outdir.NodeFiles(p.nb.node.Hostname)
	bmapPart := p.nb.out.NewPart(bmapName)
	p.parts = append(p.parts, bmapPart)
	sum := sha256.Sum256(p.bmap)
	bmapPart.SHA256 = hex.EncodeToString(sum[:])
	if err := bmapPart.Write(p.bmap, 0o644); err != nil {
		return fmt.Errorf("block map: %w", err)
	}
	return nil
}

// discard removes every part begun.
func (p *pending) discard() {
	for _, part := range p.parts {
		part.Discard()
	}
}

// failed is the result of a node that failed with err, logged unless
// the build was interrupted.
func (nb *nodeBuild) failed(err error) NodeResult {
	n := nb.node
	res := NodeResult{Hostname: n.Hostname, Role: string(n.Role), Status: StatusFailed}
	if errors.Is(err, context.Canceled) {
		res.Err = err
		return res
	}
	res.Err = outdir.DescribeWriteError(nb.s.OutDir, err)
	nb.s.Logf("%s: FAILED: %v", n.Hostname, res.Err)
	return res
}

// result is the result of a node built or unchanged, with entry.
func (nb *nodeBuild) result(entry outdir.Node, status string) NodeResult {
	res := NodeResult{Hostname: nb.node.Hostname, Role: string(nb.node.Role), Status: status}
	res.File, res.Size, res.SHA256 = filepath.Join(nb.s.OutDir, entry.File), entry.Size, entry.SHA256
	if entry.XZ != "" {
		res.XZ = filepath.Join(nb.s.OutDir, entry.XZ)
	}
	return res
}

// unchanged reports whether the node's inputs are unchanged and its image
// intact: nothing to do, but a .img.xz that was not asked for this time
// goes (it describes this image only while nobody rebuilds it).
func (nb *nodeBuild) unchanged(ctx context.Context, inputs string) (outdir.Node, bool, error) {
	host := nb.node.Hostname
	prev, ok := nb.out.Entry(host)
	if nb.opt.Force || !ok || prev.Inputs != inputs || (prev.XZ == "" && nb.s.Compress) || !nb.out.Intact(ctx, prev) {
		return outdir.Node{}, false, nil
	}
	if !nb.s.Compress && prev.XZ != "" {
		if err := nb.out.DropXZ(host); err != nil {
			return outdir.Node{}, false, err
		}
		prev, _ = nb.out.Entry(host)
	}
	nb.s.Logf("%s: unchanged, skipped (use --force to rebuild)", host)
	return prev, true, nil
}

// entry is the node's manifest entry, its files still to be made.
func (nb *nodeBuild) entry(inputs string) (outdir.Node, error) {
	n := nb.node
	method, err := nb.s.Method(n)
	if err != nil {
		return outdir.Node{}, err
	}
	img, bmap, _ := outdir.NodeFiles(n.Hostname)
	e := outdir.Node{
		Hostname: n.Hostname, Role: string(n.Role), State: outdir.StateCurrent, IP: "dhcp", Joins: n.JoinURL, ClusterInit: n.ClusterInit,
		Method: method, File: img, Bmap: bmap, Inputs: inputs, Released: nb.s.Base.Stamp.UTC().Format(time.DateOnly), CA: nb.s.CAPart(n),
	}
	if n.Address.IsValid() {
		e.IP = n.Address.String()
	}
	return e, nil
}

// makeParts writes the node's image and (when compressing) .img.xz as
// parts, and makes its block map, filling in their sums and sizes in
// p.entry. Every part begun is in p.parts, for the caller to discard if a
// step fails.
func (nb *nodeBuild) makeParts(ctx context.Context, payload firstboot.Payload, p *pending) error {
	host := nb.node.Hostname
	img, _, xzName := outdir.NodeFiles(host)
	base := nb.s.Base
	imgPart := nb.out.NewPart(img)
	p.parts = append(p.parts, imgPart)
	f, err := imgPart.Create()
	if err != nil {
		return err
	}
	sum, size, how, err := nodeimage.Write(ctx, f, base.Base, nb.s.Edit(payload), nb.opt.Progress, host+": image")
	if err != nil {
		return err
	}
	imgPart.SHA256, p.entry.SHA256, p.entry.Size = sum, sum, size
	nb.s.Logf("%s: written and verified (%s)", host, how)
	nb.opt.Event(host, StageWritten)

	if p.bmap, err = nodeimage.Bmap(imgPart.Path(), base.Known, nil); err != nil {
		return fmt.Errorf("block map: %w", err)
	}
	if nb.s.Compress {
		xzPart, err := nb.compress(ctx, imgPart, xzName, &p.entry)
		p.parts = append(p.parts, xzPart)
		if err != nil {
			return err
		}
	}
	// An interrupt while the node was made: it is not published.
	return ctx.Err()
}

// compress writes the node's .img.xz as a part.
func (nb *nodeBuild) compress(ctx context.Context, imgPart *outdir.Part, xzName string, entry *outdir.Node) (*outdir.Part, error) {
	nb.s.Logf("%s: compressing", nb.node.Hostname)
	base := nb.s.Base
	p := nb.out.NewPart(xzName)
	f, err := p.Create()
	if err != nil {
		return p, fmt.Errorf("compress: %w", err)
	}
	err = nodeimage.Compress(ctx, imgPart.Path(), f, base.XZ, base.Path, base.EditSpan, nb.s.Opt.Jobs,
		progress.New(nb.opt.Progress, nb.node.Hostname+": xz", entry.Size))
	if err == nil {
		err = p.Sync()
	}
	if err != nil {
		return p, fmt.Errorf("compress: %w", err)
	}
	if p.SHA256, entry.XZSize, err = files.SHA256(ctx, p.Path()); err != nil {
		return p, err
	}
	entry.XZ, entry.XZSHA256 = xzName, p.SHA256
	return p, nil
}
