package sbom

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/pibake/pibake/builder/dpkg"
)

// Summary is what `pibake verify` checks of an SBOM against an image.
type Summary struct {
	Node string
	// Image is the node's image file, when the SBOM names it.
	Image *File
	// BaseSHA256 and BaseImageSHA256 are the base image's sums (as
	// published, and raw).
	BaseSHA256, BaseImageSHA256 string
	Packages                    []dpkg.Package
	Payload                     []File
}

// Parse reads an SBOM that ForNode wrote.
func Parse(b []byte) (*Summary, error) {
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(bytes.NewReader(b), cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		return nil, fmt.Errorf("read CycloneDX SBOM: %w", err)
	}
	if bom.Metadata == nil || bom.Metadata.Component == nil || bom.Components == nil {
		return nil, fmt.Errorf("read CycloneDX SBOM: no node component: not an SBOM pibake wrote")
	}
	node := bom.Metadata.Component
	s := &Summary{Node: node.Name}
	if sum := hashOf(node.Hashes); sum != "" {
		s.Image = &File{Path: prop(node.Properties, PropImageFile), SHA256: sum}
	}
	for _, c := range *bom.Components {
		switch {
		case c.BOMRef == "base":
			s.BaseSHA256 = hashOf(c.Hashes)
			s.BaseImageSHA256 = prop(c.Properties, PropRawImageSHA256)
			if c.Components != nil {
				for _, p := range *c.Components {
					s.Packages = append(s.Packages, dpkg.Package{
						Name: p.Name, Version: p.Version, Architecture: prop(p.Properties, PropDebArch),
						Source: prop(p.Properties, PropDebSource), SourceVersion: prop(p.Properties, PropDebSourceVer),
					})
				}
			}
		case strings.HasPrefix(c.BOMRef, "payload:"):
			s.Payload = append(s.Payload, File{Path: c.Name, SHA256: hashOf(c.Hashes), Secret: prop(c.Properties, PropSecret) == "true"})
		}
	}
	sort.Slice(s.Payload, func(i, j int) bool { return s.Payload[i].Path < s.Payload[j].Path })
	return s, nil
}

func hashOf(h *[]cdx.Hash) string {
	if h == nil {
		return ""
	}
	for _, x := range *h {
		if x.Algorithm == cdx.HashAlgoSHA256 {
			return x.Value
		}
	}
	return ""
}

func prop(p *[]cdx.Property, name string) string {
	if p == nil {
		return ""
	}
	for _, x := range *p {
		if x.Name == name {
			return x.Value
		}
	}
	return ""
}
