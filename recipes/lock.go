package recipes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

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

// LockPath is where a recipe's lock file lives: beside a recipe file
// (lab.hcl.lock), or inside a recipe directory (pibake.lock). It does not
// end in .hcl, so a directory recipe never reads it as a recipe file.
func LockPath(r *Recipe) string {
	if fi, err := os.Stat(r.Path); err == nil && fi.IsDir() {
		return filepath.Join(r.Path, "pibake.lock")
	}
	return r.Path + ".lock"
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
	if !sha256Pattern.MatchString(l.Image.SHA256) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid lock file",
			Detail: fmt.Sprintf("%s: image.sha256 is not 64 lowercase hexadecimal digits; run pibake lock again.", path)})
	}
	if l.K3s != nil && !k3sVersionPattern.MatchString(l.K3s.Version) {
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

// ErrStaleLock marks a lock made for other recipe settings.
var ErrStaleLock = errors.New("the lock file does not match the recipe")

// ApplyLock makes r use what the lock pins: the image's URL and checksum,
// the k3s version. A lock made for another image source or channel is an
// error, never silently ignored.
func (r *Recipe) ApplyLock(l *Lock) error {
	renew := fmt.Sprintf("run pibake lock %s (or build with --update-lock)", r.Path)
	if l.Image.Source != r.Image.Source {
		return fmt.Errorf("%w: %s pins image.source %q, but the recipe says %q; %s", ErrStaleLock, l.Path, l.Image.Source, r.Image.Source, renew)
	}
	if r.Image.SHA256 != "" && r.Image.SHA256 != l.Image.SHA256 {
		return fmt.Errorf("%w: the recipe pins image sha256 %s, %s pins %s; %s", ErrStaleLock, r.Image.SHA256, l.Path, l.Image.SHA256, renew)
	}
	switch {
	case r.Cluster.K3sChannel != "" && (l.K3s == nil || l.K3s.Channel != r.Cluster.K3sChannel):
		return fmt.Errorf("%w: the recipe follows k3s channel %q, which %s does not pin; %s", ErrStaleLock, r.Cluster.K3sChannel, l.Path, renew)
	case r.Cluster.K3sChannel == "" && l.K3s != nil:
		return fmt.Errorf("%w: %s pins k3s channel %q, but the recipe names k3s_version %s; %s", ErrStaleLock, l.Path, l.K3s.Channel, r.Cluster.K3sVersion, renew)
	}
	r.Image.Source, r.Image.SHA256 = l.Image.URL, l.Image.SHA256
	if l.K3s != nil {
		r.Cluster.K3sVersion, r.Cluster.K3sChannel = l.K3s.Version, ""
	}
	return nil
}
