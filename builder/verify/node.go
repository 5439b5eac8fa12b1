package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/pibake/pibake/builder/delta"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/dpkg"
	"github.com/pibake/pibake/builder/sbom"
)

// checkImage compares candidate (the node's image, or a card) with the
// record and SHA256SUMS, and returns the SHA-256 of its image bytes.
func (rec *records) checkImage(ctx context.Context, r *Report, name string, n *delta.Node, candidate string, opt Options) string {
	res, err := rec.compare(ctx, candidate, n, opt.Base, false)
	if err != nil {
		r.add(name, []string{err.Error()}, "")
		return ""
	}
	if len(res.Diffs) > 0 && opt.Base == "" {
		// The built image, when it is here and intact, narrows every
		// difference to the byte.
		built := filepath.Join(rec.dir, n.File)
		if rec.intactReference(ctx, built, candidate, n) {
			if exact, err := rec.compare(ctx, candidate, n, built, true); err == nil {
				res.Diffs = exact.Diffs
			}
		}
	}
	var problems []string
	if res.Short {
		problems = append(problems, fmt.Sprintf("it is shorter than the image (%d bytes)", n.Size))
	}
	for _, d := range res.Diffs {
		problems = append(problems, d.String())
	}
	if res.SHA256 != n.SHA256 {
		problems = append(problems, fmt.Sprintf("SHA-256 of its %d image bytes is %s; the build made %s", n.Size, res.SHA256, n.SHA256))
	}
	detail := fmt.Sprintf("%d bytes, %d ranges written by pibake", n.Size, len(n.Written))
	r.add(name, problems, detail)
	return res.SHA256
}

// compare runs delta.Compare on candidate, with refPath (the base, or
// the built image when node is set) as the exact reference when given.
func (rec *records) compare(ctx context.Context, candidate string, n *delta.Node, refPath string, node bool) (*delta.Result, error) {
	f, err := os.Open(candidate)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd) // a device reports no size to Stat
	if err != nil {
		return nil, err
	}
	var ref *delta.Reference
	if refPath != "" {
		rf, err := os.Open(refPath)
		if err != nil {
			return nil, fmt.Errorf("reference image: %w", err)
		}
		defer rf.Close()
		ref = &delta.Reference{R: rf, Node: node}
	}
	return delta.Compare(ctx, f, size, &rec.delta.Base, n, ref)
}

// intactReference reports whether built is another file than candidate
// and holds the image SHA256SUMS lists.
func (rec *records) intactReference(ctx context.Context, built, candidate string, n *delta.Node) bool {
	bi, err1 := os.Stat(built)
	ci, err2 := os.Stat(candidate)
	if err1 != nil || err2 != nil || os.SameFile(bi, ci) {
		return false
	}
	sum, err := fileSHA256(ctx, built)
	return err == nil && sum == rec.sums[n.File] && sum == n.SHA256
}

// checkSBOM checks the node's SBOM against what the candidate holds: its
// image sum, the base, the Debian packages of its root and pibake's files
// on its boot partition. It returns the base sum the SBOM names.
func (rec *records) checkSBOM(r *Report, n *delta.Node, candidate string) string {
	name := "sbom " + sbom.FileName(n.Hostname)
	b, err := os.ReadFile(filepath.Join(rec.dir, sbom.FileName(n.Hostname)))
	if err != nil {
		r.add(name, []string{err.Error()}, "")
		return ""
	}
	s, err := sbom.Parse(b)
	if err != nil {
		r.add(name, []string{err.Error()}, "")
		return ""
	}
	var problems []string
	if s.Node != n.Hostname {
		problems = append(problems, fmt.Sprintf("it describes node %s", s.Node))
	}
	if s.Image == nil || s.Image.SHA256 != n.SHA256 {
		problems = append(problems, fmt.Sprintf("it names another image than the one the build made (%s %s)", n.File, n.SHA256))
	}
	if s.BaseImageSHA256 != rec.delta.Base.SHA256 {
		problems = append(problems, fmt.Sprintf("its base image is %s; %s records %s", s.BaseImageSHA256, delta.File, rec.delta.Base.SHA256))
	}
	im, err := diskimg.Open(candidate, false)
	if err != nil {
		problems = append(problems, fmt.Sprintf("cannot read the image's file systems: %v", err))
	} else {
		problems = append(problems, packageProblems(im, s.Packages)...)
		problems = append(problems, payloadProblems(im, s.Payload)...)
		im.Close()
	}
	r.add(name, problems, fmt.Sprintf("%d Debian packages, %d pibake files", len(s.Packages), len(s.Payload)))
	return s.BaseSHA256
}

// packageProblems compares the SBOM's packages with the image's dpkg
// database.
func packageProblems(im *diskimg.Image, listed []dpkg.Package) []string {
	have, err := dpkg.Read(im)
	if err != nil {
		return []string{err.Error()}
	}
	key := func(p dpkg.Package) string { return p.Name + ":" + p.Architecture }
	in := map[string]dpkg.Package{}
	for _, p := range have {
		in[key(p)] = p
	}
	var problems []string
	for _, p := range listed {
		got, ok := in[key(p)]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("package %s %s is listed but not installed in the image", key(p), p.Version))
		case got != p:
			problems = append(problems, fmt.Sprintf("package %s is %s in the image, %s in the SBOM", key(p), got.Version, p.Version))
		}
		delete(in, key(p))
	}
	for _, k := range sortedPackageKeys(in) {
		problems = append(problems, fmt.Sprintf("package %s %s is installed in the image but not listed", k, in[k].Version))
	}
	return problems
}

func sortedPackageKeys(m map[string]dpkg.Package) []string {
	s := make(map[string]string, len(m))
	for k := range m {
		s[k] = ""
	}
	return sortedKeys(s)
}

// payloadProblems checks pibake's files on the boot partition.
func payloadProblems(im *diskimg.Image, files []sbom.File) []string {
	var problems []string
	for _, f := range files {
		b, err := im.ReadBootFile(f.Path)
		if err != nil {
			problems = append(problems, fmt.Sprintf("boot file %s: %v", f.Path, err))
			continue
		}
		if f.Secret {
			continue // no sum recorded: the image's SHA-256 covers it
		}
		if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != f.SHA256 {
			problems = append(problems, fmt.Sprintf("boot file %s differs from the SBOM's (SHA-256 %x, listed %s)", f.Path, s, f.SHA256))
		}
	}
	return problems
}
