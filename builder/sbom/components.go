package sbom

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/pibake/pibake/builder/dpkg"
)

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// check refuses inputs that would make a document that says less than it
// seems to: a missing name or a malformed or missing sum.
func (in Input) check() error {
	if in.Node.Hostname == "" {
		return fmt.Errorf("no node hostname")
	}
	if in.Base.OSID == "" {
		return fmt.Errorf("no os-release ID for the base image")
	}
	required := map[string]string{"base image sha256": in.Base.SHA256}
	optional := map[string]string{"raw base image sha256": in.Base.ImageSHA256, "k3s install script sha256": in.K3s.InstallScriptSHA256}
	if in.Image != nil {
		required["image "+in.Image.Path] = in.Image.SHA256
	}
	for _, group := range []struct {
		what  string
		files []File
	}{{"air-gap file", in.K3s.Airgap}, {"payload file", in.Payload}} {
		for _, f := range group.files {
			switch {
			case f.Path == "":
				return fmt.Errorf("a %s without a path", group.what)
			case f.Secret && f.SHA256 != "":
				return fmt.Errorf("%s %s holds a secret but has a sum", group.what, f.Path)
			case !f.Secret:
				required[group.what+" "+f.Path] = f.SHA256
			}
		}
	}
	for what, s := range optional {
		if s != "" {
			required[what] = s
		}
	}
	for what, s := range required {
		if !sha256Hex.MatchString(s) {
			return fmt.Errorf("%s is %q, not 64 lowercase hex digits", what, s)
		}
	}
	return nil
}

// baseComponent is the base image, with its Debian packages inside it.
func (in Input) baseComponent() cdx.Component {
	b := in.Base
	sorted := append([]dpkg.Package(nil), in.Packages...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Name != sorted[j].Name {
			return sorted[i].Name < sorted[j].Name
		}
		return sorted[i].Architecture < sorted[j].Architecture
	})
	pkgs := make([]cdx.Component, 0, len(sorted))
	for _, p := range sorted {
		pkgs = append(pkgs, in.debComponent(p))
	}
	c := cdx.Component{
		BOMRef:      "base",
		Type:        cdx.ComponentTypeOS,
		Name:        b.Source,
		Version:     b.Released.UTC().Format("2006-01-02"),
		Description: b.PrettyName,
		Hashes:      sha256Hash(b.SHA256),
		Properties: props(
			PropRawImageSHA256, b.ImageSHA256,
			"pibake:os-release:id", b.OSID,
			"pibake:os-release:version-id", b.OSVersionID,
			"pibake:os-release:codename", b.Codename,
		),
		Components: &pkgs,
	}
	if c.Name == "" {
		c.Name = "base image"
	}
	if b.URL != "" {
		c.ExternalReferences = &[]cdx.ExternalReference{{Type: cdx.ERTypeDistribution, URL: b.URL, Hashes: sha256Hash(b.SHA256)}}
	}
	return c
}

// debComponent is one installed Debian package, with a package URL as
// syft writes it (syft/pkg/cataloger/debian/package.go, packageURL): the
// os-release ID as namespace, the architecture, the distribution and the
// source package as qualifiers.
func (in Input) debComponent(p dpkg.Package) cdx.Component {
	return cdx.Component{
		BOMRef:     "deb:" + p.Name + ":" + p.Architecture,
		Type:       cdx.ComponentTypeLibrary,
		Name:       p.Name,
		Version:    p.Version,
		PackageURL: in.debPURL(p.Name, p.Version, p.Architecture, p.Source, p.SourceVersion),
		Properties: props(
			PropDebArch, p.Architecture,
			PropDebSource, p.Source,
			PropDebSourceVer, p.SourceVersion,
		),
	}
}

// debPURL is a pkg:deb package URL; version and source may be empty.
func (in Input) debPURL(name, version, arch, src, srcVersion string) string {
	q := map[string]string{"arch": arch}
	if in.Base.OSVersionID != "" {
		q["distro"] = in.Base.OSID + "-" + in.Base.OSVersionID
	}
	if src != "" && src != name {
		q["upstream"] = src
		if srcVersion != "" && srcVersion != version {
			q["upstream"] = src + "@" + srcVersion
		}
	}
	s := "pkg:deb/" + purlEscape(in.Base.OSID) + "/" + purlEscape(name)
	if version != "" {
		s += "@" + purlEscape(version)
	}
	keys := make([]string, 0, len(q))
	for k, v := range q {
		if v != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys) // the purl spec's canonical order
	for i, k := range keys {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		s += sep + k + "=" + purlEscape(q[k])
	}
	return s
}

// purlEscape percent-encodes all but the characters the purl spec leaves
// as they are (letters, digits, ".-_~", and ":"), so "+" is %2B and "@"
// %40, as syft writes Debian versions and upstream qualifiers.
func purlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte(".-_~:", c) >= 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// k3sComponent is k3s: pinned, or named by its channel and marked
// unresolved; its install script and air-gap files inside it.
func (in Input) k3sComponent() cdx.Component {
	k := in.K3s
	c := cdx.Component{
		BOMRef:     "k3s",
		Type:       cdx.ComponentTypeApplication,
		Name:       "k3s",
		Version:    k.Version,
		Properties: props("pibake:k3s:channel", k.Channel, PropInstalledAt, "first-boot"),
	}
	if k.Version != "" {
		c.PackageURL = "pkg:github/k3s-io/k3s@" + purlEscape(k.Version)
	} else {
		*c.Properties = append(*c.Properties, cdx.Property{Name: PropResolution, Value: "unresolved"})
	}
	var files []cdx.Component
	if k.InstallScriptURL != "" || k.InstallScriptSHA256 != "" {
		script := cdx.Component{BOMRef: "k3s:install-script", Type: cdx.ComponentTypeFile, Name: "install.sh", Hashes: sha256Hash(k.InstallScriptSHA256)}
		if k.InstallScriptURL != "" {
			script.ExternalReferences = &[]cdx.ExternalReference{{Type: cdx.ERTypeDistribution, URL: k.InstallScriptURL}}
		}
		files = append(files, script)
	}
	for _, f := range sortedFiles(k.Airgap) {
		files = append(files, fileComponent("k3s:airgap:", f, "boot"))
	}
	if len(files) > 0 {
		c.Components = &files
	}
	return c
}

// aptComponents are the packages apt installs at first boot: requested by
// name, their version chosen on the node, so marked unresolved.
func (in Input) aptComponents() []cdx.Component {
	names := append([]string(nil), in.Apt.Packages...)
	if in.Apt.ModulesExtra {
		names = append(names, "linux-modules-extra-raspi")
	}
	sort.Strings(names)
	var comps []cdx.Component
	arch := in.arch()
	for i, n := range names {
		if i > 0 && names[i-1] == n {
			continue
		}
		c := cdx.Component{
			BOMRef:     "apt:" + n,
			Type:       cdx.ComponentTypeLibrary,
			Name:       n,
			PackageURL: in.debPURL(n, "", arch, "", ""),
			Properties: props(PropResolution, "unresolved", PropInstalledAt, "first-boot"),
		}
		if n == "linux-modules-extra-raspi" && in.Apt.ModulesExtra {
			*c.Properties = append(*c.Properties, cdx.Property{Name: "pibake:condition", Value: "only where apt-cache finds it (an Ubuntu package)"})
		}
		comps = append(comps, c)
	}
	return comps
}

// arch is the base's native architecture: that of its most common
// architecture-specific package (a multi-arch image also has armhf ones).
func (in Input) arch() string {
	count := map[string]int{}
	best := ""
	for _, p := range in.Packages {
		if p.Architecture == "all" {
			continue
		}
		count[p.Architecture]++
		if n := count[p.Architecture]; n > count[best] || n == count[best] && p.Architecture < best {
			best = p.Architecture
		}
	}
	return best
}

func (in Input) payloadComponents() []cdx.Component {
	var comps []cdx.Component
	for _, f := range sortedFiles(in.Payload) {
		comps = append(comps, fileComponent("payload:", f, "boot"))
	}
	return comps
}

func sortedFiles(files []File) []File {
	s := append([]File(nil), files...)
	sort.Slice(s, func(i, j int) bool { return s[i].Path < s[j].Path })
	return s
}

func fileComponent(prefix string, f File, where string) cdx.Component {
	c := cdx.Component{
		BOMRef:     prefix + f.Path,
		Type:       cdx.ComponentTypeFile,
		Name:       f.Path,
		Properties: props(PropLocation, where, "pibake:size", fmt.Sprint(f.Size)),
	}
	if f.Secret {
		*c.Properties = append(*c.Properties, cdx.Property{Name: PropSecret, Value: "true"})
	} else {
		c.Hashes = sha256Hash(f.SHA256)
	}
	return c
}
