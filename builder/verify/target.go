package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/pibake/pibake/builder/delta"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/firstboot"
)

// Dir verifies a build directory: every file SHA256SUMS lists, the
// signatures, every node's image and SBOM, the provenance.
func Dir(ctx context.Context, dir string, opt Options) (*Report, error) {
	allowed, err := opt.allowed()
	if err != nil {
		return nil, err
	}
	r := &Report{Target: dir}
	rec := loadRecords(dir)
	checkSignatures(r, dir, allowed)
	if rec.delta == nil {
		rec.checkSums(ctx, r)
		r.add(delta.File, []string{"missing or unreadable: the images' bytes cannot be checked against the base"}, "")
		rec.checkProvenance(r, "")
		return r, ctx.Err()
	}
	for i := range rec.delta.Nodes {
		n := &rec.delta.Nodes[i]
		rec.actual[n.File] = rec.checkImage(ctx, r, "image "+n.File, n, filepath.Join(dir, n.File), opt)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	rec.checkSums(ctx, r)
	baseSum := ""
	for i := range rec.delta.Nodes {
		n := &rec.delta.Nodes[i]
		if s := rec.checkSBOM(r, n, filepath.Join(dir, n.File)); s != "" {
			baseSum = s
		}
	}
	rec.checkProvenance(r, baseSum)
	return r, nil
}

// Image verifies an image file or a card (a block device) against the
// build directory it came from: that directory's signatures and records
// for the node the image holds.
func Image(ctx context.Context, target string, opt Options) (*Report, error) {
	allowed, err := opt.allowed()
	if err != nil {
		return nil, err
	}
	dir := opt.Dir
	if dir == "" {
		dir = filepath.Dir(target)
	}
	if _, err := os.Stat(filepath.Join(dir, SumsFile)); err != nil {
		return nil, fmt.Errorf("verify %s: %s holds no %s; name the build directory with --dir", target, dir, SumsFile)
	}
	rec := loadRecords(dir)
	if rec.delta == nil {
		return nil, fmt.Errorf("verify %s: %s has no readable %s; a build of this pibake writes it", target, dir, delta.File)
	}
	host := opt.Node
	if host == "" {
		if host, err = nodeOf(target); err != nil {
			return nil, fmt.Errorf("verify %s: %w; name the node with --node", target, err)
		}
	}
	n := rec.delta.Find(host)
	if n == nil {
		return nil, fmt.Errorf("verify %s: %s records no node %s", target, delta.File, host)
	}
	r := &Report{Target: target}
	checkSignatures(r, dir, allowed)
	rec.checkRecordSums(ctx, r, n)
	rec.checkImage(ctx, r, fmt.Sprintf("image %s (node %s)", target, host), n, target, opt)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	baseSum := rec.checkSBOM(r, n, target)
	var problems []string
	switch {
	case rec.prov == nil:
		problems = append(problems, "missing or unreadable")
	case rec.prov.Subjects()[n.File] != n.SHA256:
		problems = append(problems, fmt.Sprintf("its subject %s is not the image the build made", n.File))
	case baseSum != "" && rec.prov.BaseSHA256() != baseSum:
		problems = append(problems, "its base image is not the SBOM's")
	}
	r.add("provenance "+ProvenanceFile, problems, "names the image as a subject")
	return r, nil
}

// nodeOf reads the hostname from the boot partition's pibake/node.json.
func nodeOf(target string) (string, error) {
	im, err := diskimg.Open(target, false)
	if err != nil {
		return "", err
	}
	defer im.Close()
	b, err := im.ReadBootFile(path.Join(firstboot.Dir, "node.json"))
	if err != nil {
		return "", err
	}
	var n struct {
		Hostname string `json:"hostname"`
	}
	if err := json.Unmarshal(b, &n); err != nil || n.Hostname == "" {
		return "", fmt.Errorf("%s/node.json names no hostname", firstboot.Dir)
	}
	return n.Hostname, nil
}
