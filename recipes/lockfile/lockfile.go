// Package lockfile reads and writes lock files, which pin a recipe's
// moving inputs (the image an alias stood for, the k3s release a channel
// named); model.Recipe.ApplyLock applies one.
package lockfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"

	"github.com/pibake/pibake/recipes/diag"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

// Lock pins a recipe's moving inputs, for builds that give the same bytes
// next month: the release an image alias stood for, and the k3s version a
// channel named. `pibake lock` writes it beside the recipe; `pibake build`
// uses it when it is there.
type Lock struct {
	// Path is the lock file's path.
	Path  string
	Image LockImage `hcl:"image,block"`
	K3s   *LockK3s  `hcl:"k3s,block"`
}

// LockImage is the base image a lock pins.
type LockImage struct {
	// Source is the recipe's image.source the lock was made for.
	Source string `hcl:"source"`
	// URL and SHA256 are the file downloaded and its checksum.
	URL    string `hcl:"url"`
	SHA256 string `hcl:"sha256"`
	// ExtractSHA256 and ReleaseDate come from Raspberry Pi's OS list when
	// Source is an alias.
	ExtractSHA256 string `hcl:"extract_sha256,optional"`
	ReleaseDate   string `hcl:"release_date,optional"`
}

// LockK3s is the k3s release a lock pins for a recipe's channel.
type LockK3s struct {
	Channel string `hcl:"channel"`
	Version string `hcl:"version"`
}

// LoadLock reads a lock file; a missing one is nil without diagnostics.
func LoadLock(p *hclparse.Parser, path string) (*Lock, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read lock file", Detail: fmt.Sprintf("Reading %s failed: %s.", path, diag.DescribeOSError(err))}}
	}
	f, diags := p.ParseHCL(src, path)
	if diags.HasErrors() {
		return nil, diags
	}
	l := &Lock{Path: path}
	diags = append(diags, gohcl.DecodeBody(f.Body, nil, l)...)
	if diags.HasErrors() {
		return nil, diags
	}
	if !SHA256Pattern.MatchString(l.Image.SHA256) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid lock file",
			Detail: fmt.Sprintf("%s: image.sha256 is not 64 lowercase hexadecimal digits; run pibake lock again.", path)})
	}
	if l.K3s != nil && !K3sVersionPattern.MatchString(l.K3s.Version) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid lock file",
			Detail: fmt.Sprintf("%s: k3s.version %q is not a k3s release such as v1.31.4+k3s1; run pibake lock again.", path, l.K3s.Version)})
	}
	return l, diags
}

// Bytes renders the lock file.
func (l *Lock) Bytes(recipeName string) []byte {
	f := hclwrite.NewEmptyFile()
	body := f.Body()
	body.AppendUnstructuredTokens(hclwrite.Tokens{{Type: hclsyntax.TokenComment, Bytes: []byte(fmt.Sprintf(
		"# Written by pibake lock: the moving inputs of %s, pinned, so that every build\n# of it downloads the same image and installs the same k3s. Commit it with the\n# recipe; pibake lock (or build --update-lock) renews it.\n", recipeName))}})
	img := body.AppendNewBlock("image", nil).Body()
	img.SetAttributeValue("source", cty.StringVal(l.Image.Source))
	img.SetAttributeValue("url", cty.StringVal(l.Image.URL))
	img.SetAttributeValue("sha256", cty.StringVal(l.Image.SHA256))
	if l.Image.ExtractSHA256 != "" {
		img.SetAttributeValue("extract_sha256", cty.StringVal(l.Image.ExtractSHA256))
	}
	if l.Image.ReleaseDate != "" {
		img.SetAttributeValue("release_date", cty.StringVal(l.Image.ReleaseDate))
	}
	if l.K3s != nil {
		body.AppendNewline()
		k := body.AppendNewBlock("k3s", nil).Body()
		k.SetAttributeValue("channel", cty.StringVal(l.K3s.Channel))
		k.SetAttributeValue("version", cty.StringVal(l.K3s.Version))
	}
	return hclwrite.Format(f.Bytes())
}

// What a lock file pins, and what a recipe may pin itself: a SHA-256 in
// hexadecimal, a k3s release.
var (
	SHA256Pattern     = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	K3sVersionPattern = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?\+k3s[0-9]+$`)
)
