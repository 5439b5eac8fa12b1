// Package manifest is an output directory's manifest.json: what was built
// from what, node by node, and the build-wide records SHA256SUMS lists.
// Package outdir, which alone writes it, names its types too.
package manifest

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/recipes"
)

// File is the manifest's name in the output directory.
const File = "manifest.json"

// Record is a build-wide file listed in SHA256SUMS (delta.json,
// provenance.json).
type Record struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// Manifest is manifest.json: what was built from what. It holds no secret
// and no timestamp (flash records aside), so identical builds give
// identical manifests. It is read and written here only.
type Manifest struct {
	PibakeVersion string `json:"pibake_version"`
	Cluster       string `json:"cluster"`
	RecipeHash    string `json:"recipe_hash"`
	// RecipeNodes are the recipe's hostnames in its order: what a merge
	// of shards must hold, and (with Shard) which shard holds which.
	RecipeNodes []string `json:"recipe_nodes,omitempty"`
	// Shard is "I/N" when the last build built shard I of N (build
	// --shard); empty for a build of the whole recipe.
	Shard string `json:"shard,omitempty"`
	// Token says where the cluster token comes from: "recipe" or
	// "generated" (kept in .pibake/token); TokenID identifies a generated
	// one, so a different token file is noticed before it rebuilds every
	// node with a token the running cluster does not know.
	Token   string `json:"token"`
	TokenID string `json:"token_id,omitempty"`
	// CAHash is the hash of the CA pibake generated for the cluster,
	// which the joining nodes pin; empty with cluster.ca = "none".
	CAHash string `json:"ca_hash,omitempty"`
	Base   Base   `json:"base_image"`
	Nodes  []Node `json:"nodes"`
	// Records are the build-wide files SHA256SUMS lists beside the nodes'
	// (delta.json, provenance.json: records.go), in the order written.
	Records []Record `json:"records,omitempty"`
	// Flashes are what pibake flash wrote, oldest first.
	Flashes []Flash `json:"flashes,omitempty"`
}

// Token sources in Manifest.Token.
const (
	TokenFromRecipe = "recipe"
	TokenGenerated  = "generated"
)

// Flash is one target pibake flash wrote: the only timestamped record in
// the manifest, and only there once a device was flashed.
type Flash struct {
	Node string `json:"node"`
	// Build is the build id of the image written (BuildID of its
	// inputs, as the node reports it at first boot): pibake watch takes
	// a card flashed from a build not in the manifest's nodes as the
	// node's current one.
	Build  string `json:"build,omitempty"`
	Target string `json:"target"`
	Model  string `json:"model,omitempty"`
	Serial string `json:"serial,omitempty"`
	// Result is "verified", "failed" or "interrupted".
	Result string `json:"result"`
	SHA256 string `json:"sha256,omitempty"`
	Error  string `json:"error,omitempty"`
	Time   string `json:"time"`
}

// MaxFlashes bounds the flash history manifest.json keeps.
const MaxFlashes = 1000

// Base is the base image the nodes were built from.
type Base struct {
	Source    string        `json:"source"`
	FinalURL  string        `json:"final_url,omitempty"`
	SHA256    string        `json:"sha256"`
	Style     diskimg.Style `json:"style"`
	OSRelease string        `json:"os_release"`
}

// Node is one node's entry: its files and what they were made from.
type Node struct {
	Hostname    string         `json:"hostname"`
	Role        string         `json:"role"`
	State       string         `json:"state"`
	IP          string         `json:"ip"`
	Joins       string         `json:"joins,omitempty"`
	ClusterInit bool           `json:"cluster_init,omitempty"`
	Method      recipes.Method `json:"method"`
	// CA is the node's part in the generated CA: firstboot.CACarries,
	// firstboot.CAPins or empty.
	CA     string `json:"ca,omitempty"`
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Bmap   string `json:"bmap"`
	// BmapSHA256 lists the block map in SHA256SUMS (pibake before issue
	// 26 left it out).
	BmapSHA256 string `json:"bmap_sha256,omitempty"`
	XZ         string `json:"xz,omitempty"`
	XZSHA256   string `json:"xz_sha256,omitempty"`
	XZSize     int64  `json:"xz_size,omitempty"`
	// SBOM is the node's software bill of materials (<host>.cdx.json).
	SBOM       string `json:"sbom,omitempty"`
	SBOMSHA256 string `json:"sbom_sha256,omitempty"`
	// Released is the date every file in the image is stamped with (the
	// base image's, or SOURCE_DATE_EPOCH's), as YYYY-MM-DD.
	Released string `json:"released,omitempty"`
	// Inputs hashes everything the image is made from; BuildID of it is
	// the node's build id.
	Inputs string `json:"inputs"`
}

// Node states in manifest.json.
const (
	// StateCurrent: the image is built from the recipe and base as they are.
	StateCurrent = "current"
	// StateOutdated: the node's last good image; the recipe or base has
	// changed since, and this build did not rebuild it (it failed, or was
	// not selected with --node).
	StateOutdated = "outdated"
	// StateOrphan: the node is no longer in the recipe; its image stays
	// until a build with --prune.
	StateOrphan = "orphan"
)

// BuildID is the build id of an image made from inputs (a node's inputs
// hash): its first 16 hex digits. The node carries it, reports it at
// first boot and names its cloud-init instance with it.
func BuildID(inputs string) string {
	if len(inputs) < 16 {
		return ""
	}
	return inputs[:16]
}

// BuildID is the build id of the node's image.
func (n Node) BuildID() string { return BuildID(n.Inputs) }

// NodeFiles are the final names of a node's files.
func NodeFiles(host string) (img, bmap, xz string) {
	return host + ".img", host + ".img.bmap", host + ".img.xz"
}

// SBOMFile is the final name of a node's SBOM (sbom.FileName's: CycloneDX's
// recommended extension).
func SBOMFile(host string) string { return host + ".cdx.json" }

// NodeFileNames are every final name a node's files may have, in the
// order a publication renames them: the image last.
func NodeFileNames(host string) []string {
	img, bmap, xz := NodeFiles(host)
	return []string{xz, SBOMFile(host), bmap, img}
}

// ReadManifest reads dir's manifest.json; a missing or damaged one reads
// as empty (a damaged manifest only means rebuilding).
func ReadManifest(dir string) Manifest {
	var m Manifest
	if b, err := os.ReadFile(filepath.Join(dir, File)); err == nil {
		json.Unmarshal(b, &m)
	}
	return m
}

// Node returns host's entry, or nil.
func (m *Manifest) Node(host string) *Node {
	for i := range m.Nodes {
		if m.Nodes[i].Hostname == host {
			return &m.Nodes[i]
		}
	}
	return nil
}

// Remove takes host's entry out.
func (m *Manifest) Remove(host string) {
	for i := range m.Nodes {
		if m.Nodes[i].Hostname == host {
			m.Nodes = append(m.Nodes[:i], m.Nodes[i+1:]...)
			return
		}
	}
}

// Set puts e in place of its host's entry.
func (m *Manifest) Set(e Node) {
	m.Remove(e.Hostname)
	m.Nodes = append(m.Nodes, e)
}

// Clone is a copy of m whose slices the caller may change.
func (m *Manifest) Clone() Manifest {
	c := *m
	c.Nodes = append([]Node(nil), m.Nodes...)
	c.Flashes = append([]Flash(nil), m.Flashes...)
	c.Records = append([]Record(nil), m.Records...)
	return c
}
