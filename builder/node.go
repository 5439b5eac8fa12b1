package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
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
	// xz says how its .img.xz was made, when one was.
	xz *nodeimage.XZStats
}

// run builds the node (or finds it unchanged) and publishes it. Failures
// are in the result: one node's failure does not stop the others.
func (nb *nodeBuild) run(ctx context.Context) NodeResult {
	n := nb.node
	res := NodeResult{Hostname: n.Hostname, Role: string(n.Role)}
	if err := ctx.Err(); err != nil {
		res.Status, res.Err = StatusInterrupted, err
		return res
	}
	entry, unchanged, err := nb.build1(ctx)
	switch {
	case err != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		res.Status, res.Err = StatusInterrupted, err
		return res
	case err != nil:
		res.Status, res.Err = StatusFailed, outdir.DescribeWriteError(nb.s.OutDir, err)
		nb.s.Logf("%s: FAILED: %v", n.Hostname, res.Err)
		return res
	}
	res.Status = StatusBuilt
	if unchanged {
		res.Status = StatusUnchanged
	}
	res.File, res.Size, res.SHA256 = filepath.Join(nb.s.OutDir, entry.File), entry.Size, entry.SHA256
	if entry.XZ != "" {
		res.XZ = filepath.Join(nb.s.OutDir, entry.XZ)
	}
	res.XZBlocks = nb.xz
	return res
}

// build1 makes the node's files under temporary names and publishes them,
// or leaves an unchanged node as it is (unchanged is then true).
func (nb *nodeBuild) build1(ctx context.Context) (entry outdir.Node, unchanged bool, err error) {
	inputs, err := nb.s.Inputs(*nb.node)
	if err != nil {
		return outdir.Node{}, false, err
	}
	if prev, ok, err := nb.unchanged(ctx, inputs); ok || err != nil {
		return prev, ok, err
	}
	entry, err = nb.entry(inputs)
	if err != nil {
		return outdir.Node{}, false, err
	}
	payload, err := nb.s.Payload(nb.node, inputs)
	if err != nil {
		return outdir.Node{}, false, err
	}
	start := time.Now()
	parts, err := nb.makeParts(ctx, payload, &entry)
	if err == nil {
		// Past this point the node is published whole, even on an
		// interrupt: its files are complete.
		err = ctx.Err()
	}
	if err != nil {
		for _, p := range parts {
			p.Discard()
		}
		return outdir.Node{}, false, err
	}
	if err := nb.out.Publish(entry, parts...); err != nil {
		return outdir.Node{}, false, err
	}
	nb.s.Logf("%s: done in %s, sha256 %s…", entry.Hostname, time.Since(start).Round(10*time.Millisecond), entry.SHA256[:12])
	nb.opt.Event(entry.Hostname, StagePublished)
	return entry, false, nil
}

// unchanged reports whether the node's inputs are unchanged and its image
// intact: nothing to do, but a .img.xz that was not asked for this time
// goes (it describes this image only while nobody rebuilds it).
func (nb *nodeBuild) unchanged(ctx context.Context, inputs string) (outdir.Node, bool, error) {
	host := nb.node.Hostname
	prev, ok := nb.out.Entry(host)
	if nb.opt.Force || !ok || prev.Inputs != inputs || prev.SBOM == "" || (prev.XZ == "" && nb.s.Compress) || !nb.out.Intact(ctx, prev) {
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

// makeParts writes the node's image, SBOM, block map and (when
// compressing) .img.xz as parts, filling in their sums and sizes in entry. It returns
// every part it began, for the caller to discard if a step fails.
func (nb *nodeBuild) makeParts(ctx context.Context, payload firstboot.Payload, entry *outdir.Node) ([]*outdir.Part, error) {
	host := nb.node.Hostname
	img, bmapName, xzName := outdir.NodeFiles(host)
	base := nb.s.Base
	imgPart := nb.out.NewPart(img)
	parts := []*outdir.Part{imgPart}
	f, err := imgPart.Create()
	if err != nil {
		return parts, err
	}
	sum, size, how, err := nodeimage.Write(ctx, f, base.Base, nb.s.Edit(payload), nb.opt.Progress, host+": image")
	if err != nil {
		return parts, err
	}
	imgPart.SHA256, entry.SHA256, entry.Size = sum, sum, size
	nb.s.Logf("%s: written and verified (%s)", host, how)
	nb.opt.Event(host, StageWritten)
	if err := nb.nodeDelta(ctx, imgPart.Path(), entry); err != nil {
		return parts, err
	}
	sbomPart, err := nb.sbomPart(payload, imgPart.Path(), entry)
	if sbomPart != nil {
		parts = append(parts, sbomPart)
	}
	if err != nil {
		return parts, err
	}

	bmap, err := nodeimage.Bmap(imgPart.Path(), base.Known, nil)
	if err != nil {
		return parts, fmt.Errorf("block map: %w", err)
	}
	bmapPart := nb.out.NewPart(bmapName)
	parts = append(parts, bmapPart)
	bmapSum := sha256.Sum256(bmap)
	bmapPart.SHA256 = hex.EncodeToString(bmapSum[:])
	entry.BmapSHA256 = bmapPart.SHA256
	if err := bmapPart.Write(bmap, 0o644); err != nil {
		return parts, fmt.Errorf("block map: %w", err)
	}
	if !nb.s.Compress {
		return parts, nil
	}
	xzPart, err := nb.compress(ctx, imgPart, xzName, entry)
	return append(parts, xzPart), err
}

// describeXZ says how a node's .img.xz was made: the base's blocks
// copied, and each block compressed again with what the edit wrote there.
func describeXZ(s nodeimage.XZStats) string {
	if s.NoBase != "" {
		return fmt.Sprintf(".img.xz: %d blocks compressed (%s to copy blocks from)", s.Blocks, s.NoBase)
	}
	msg := fmt.Sprintf(".img.xz: %d of %d blocks copied from the base's .xz, %d compressed again (%s)", s.Copied, s.Blocks, len(s.Compressed), s.Encoder)
	for _, b := range s.Compressed {
		why := b.Why
		if len(why) > 6 {
			why = append(why[:6:6], fmt.Sprintf("%d more", len(b.Why)-6))
		}
		msg += fmt.Sprintf("; block %d (MiB %d-%d): %s", b.Index, b.Start>>20, (b.End+(1<<20)-1)>>20, strings.Join(why, ", "))
	}
	return msg
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
	stats, err := nodeimage.Compress(ctx, imgPart.Path(), f, base.XZ, base.Path, base.EditSpan, nb.s.Opt.Jobs,
		progress.New(nb.opt.Progress, nb.node.Hostname+": xz", entry.Size))
	if err == nil {
		nb.s.Logf("%s: %s", nb.node.Hostname, describeXZ(stats))
		nb.xz = &stats
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
