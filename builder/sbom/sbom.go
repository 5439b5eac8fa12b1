// Package sbom writes a node image's software bill of materials as
// CycloneDX 1.6 JSON, with the CycloneDX project's own Go library: every
// Debian package of the base image, the base image itself, k3s, the apt
// packages the recipe installs at first boot (requested, not resolved) and
// pibake's own files on the boot partition.
//
// CycloneDX rather than SPDX 2.3: SPDX 2.3 makes a SHA-1 mandatory for
// every file (clause 8.4), where pibake has SHA-256 sums; CycloneDX has
// component types for an operating system image, namespaced properties to
// mark a package as requested-but-unresolved machine-readably, and its Go
// library (github.com/CycloneDX/cyclonedx-go) links nothing but the
// standard library. Raspberry Pi's own images ship SPDX from syft; syft
// converts between the two.
//
// Identical inputs give identical bytes: the only timestamp is the base
// image's (the one every FAT entry pibake writes carries), every list is
// sorted, and the serial number is a name-based UUID of the document.
package sbom

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/pibake/pibake/builder/dpkg"
)

// FileSuffix ends the name of a node's SBOM in the output directory
// (CycloneDX's recommended extension).
const FileSuffix = ".cdx.json"

// FileName is the name of a node's SBOM: <hostname>.cdx.json.
func FileName(host string) string { return host + FileSuffix }

// Input is everything a node's SBOM describes. Nothing in it is secret:
// files holding secrets are listed with Secret set and no sum.
type Input struct {
	// PibakeVersion is the version of pibake that built the image.
	PibakeVersion string
	Cluster       string
	Node          Node
	// Image is the node's image file, when its sum is known.
	Image *File
	Base  Base
	// Packages are the base image's installed Debian packages (dpkg.Read).
	Packages []dpkg.Package
	K3s      K3s
	Apt      Apt
	// Payload are the files pibake writes to the boot partition, by their
	// path there ("pibake/firstboot.sh", "cmdline.txt").
	Payload []File
}

// Node is the node the image is for.
type Node struct {
	Hostname string
	Role     string
	// BuildID is the first 16 hex digits of the node's inputs hash.
	BuildID string
}

// File is a file with its SHA-256. A file with Secret set holds a secret
// (the cluster token, a Wi-Fi key, a password hash): its sum is left out,
// since a plain hash of a small file with a weak secret in it lets anyone
// try guesses cheaply (the manifest keys its hashes for the same reason).
type File struct {
	Path   string
	SHA256 string
	Size   int64
	Secret bool
}

// Base is the base image a node is built from.
type Base struct {
	// Source is the recipe's image.source ("raspios_lite_arm64:latest").
	Source string
	// URL is where the file was downloaded from (after redirects).
	URL string
	// SHA256 is the sum of the file as published (the .img.xz);
	// ImageSHA256 that of the raw image.
	SHA256      string
	ImageSHA256 string
	// Released is the base's own newest timestamp, the only time in the
	// document.
	Released time.Time
	// OSID, OSVersionID, PrettyName and Codename come from the root's
	// /etc/os-release (ID is "debian" for Raspberry Pi OS arm64 and
	// "raspbian" for the 32-bit one); OSID names the purl namespace of
	// every Debian package, as syft does.
	OSID, OSVersionID, PrettyName, Codename string
}

// K3s is how the node gets k3s.
type K3s struct {
	// Version is set when the recipe or its lock pins it; Channel names
	// the channel the install script resolves at first boot otherwise.
	Version, Channel string
	// InstallScriptURL and InstallScriptSHA256 (when known: an air-gap
	// install script travels in the image) say which installer runs.
	InstallScriptURL    string
	InstallScriptSHA256 string
	// Airgap are the air-gap files in the image.
	Airgap []File
}

// Apt is what the recipe asks apt to do at first boot.
type Apt struct {
	Packages     []string
	Upgrade      bool
	ModulesExtra bool
}

// Property names pibake uses, in the "pibake:" namespace.
const (
	PropResolution     = "pibake:resolution" // "unresolved": the version is chosen on the node
	PropInstalledAt    = "pibake:installed-at"
	PropSecret         = "pibake:secret"
	PropLocation       = "pibake:location"
	PropImageFile      = "pibake:image-file"
	PropImageSize      = "pibake:image-size"
	PropRawImageSHA256 = "pibake:raw-image-sha256"
	PropDebArch        = "pibake:deb:architecture"
	PropDebSource      = "pibake:deb:source"
	PropDebSourceVer   = "pibake:deb:source-version"
)

// ForNode returns the node's SBOM: CycloneDX 1.6 JSON, indented.
func ForNode(in Input) ([]byte, error) {
	if err := in.check(); err != nil {
		return nil, fmt.Errorf("sbom of %s: %w", in.Node.Hostname, err)
	}
	bom := cdx.NewBOM()
	bom.Metadata = in.metadata()
	base := in.baseComponent()
	k3s := in.k3sComponent()
	comps := []cdx.Component{base, k3s}
	comps = append(comps, in.aptComponents()...)
	comps = append(comps, in.payloadComponents()...)
	bom.Components = &comps
	deps := make([]string, 0, len(comps))
	for _, c := range comps {
		deps = append(deps, c.BOMRef)
	}
	bom.Dependencies = &[]cdx.Dependency{{Ref: bom.Metadata.Component.BOMRef, Dependencies: &deps}}

	// The serial number names this document: a UUID (version 5, as the
	// schema's pattern wants) of the document's bytes without it.
	unnamed, err := encode(bom)
	if err != nil {
		return nil, err
	}
	bom.SerialNumber = "urn:uuid:" + uuid5(urlNamespace, "https://github.com/pibake/pibake/sbom#"+hexSum(unnamed))
	return encode(bom)
}

func encode(bom *cdx.BOM) ([]byte, error) {
	var buf bytes.Buffer
	enc := cdx.NewBOMEncoder(&buf, cdx.BOMFileFormatJSON).SetPretty(true).SetEscapeHTML(false)
	if err := enc.EncodeVersion(bom, cdx.SpecVersion1_6); err != nil {
		return nil, fmt.Errorf("encode CycloneDX: %w", err)
	}
	return buf.Bytes(), nil
}

func (in Input) metadata() *cdx.Metadata {
	node := cdx.Component{
		BOMRef:  "node:" + in.Node.Hostname,
		Type:    cdx.ComponentTypeOS,
		Name:    in.Node.Hostname,
		Version: in.Node.BuildID,
		Description: fmt.Sprintf("Raspberry Pi OS image of k3s %s %s of cluster %s, built by pibake",
			in.Node.Role, in.Node.Hostname, in.Cluster),
		Properties: props(
			"pibake:cluster", in.Cluster,
			"pibake:role", in.Node.Role,
			"pibake:apt:upgrade", fmt.Sprint(in.Apt.Upgrade),
		),
	}
	if in.Image != nil {
		node.Hashes = &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: in.Image.SHA256}}
		*node.Properties = append(*node.Properties,
			cdx.Property{Name: PropImageFile, Value: in.Image.Path},
			cdx.Property{Name: PropImageSize, Value: fmt.Sprint(in.Image.Size)})
	}
	tool := cdx.Component{Type: cdx.ComponentTypeApplication, Name: "pibake", Version: in.PibakeVersion}
	return &cdx.Metadata{
		Timestamp: in.Base.Released.UTC().Format(time.RFC3339),
		Tools:     &cdx.ToolsChoice{Components: &[]cdx.Component{tool}},
		Component: &node,
	}
}

// props makes a property list from name, value pairs, leaving out empty
// values.
func props(kv ...string) *[]cdx.Property {
	var p []cdx.Property
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			p = append(p, cdx.Property{Name: kv[i], Value: kv[i+1]})
		}
	}
	return &p
}

func sha256Hash(sum string) *[]cdx.Hash {
	if sum == "" {
		return nil
	}
	return &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: sum}}
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// urlNamespace is RFC 4122's namespace for names that are URLs.
var urlNamespace = [16]byte{0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}

// uuid5 is an RFC 4122 name-based (SHA-1) UUID.
func uuid5(ns [16]byte, name string) string {
	h := sha1.New()
	h.Write(ns[:])
	h.Write([]byte(name))
	u := h.Sum(nil)[:16]
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
