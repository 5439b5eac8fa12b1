package builder

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/recipes"
)

// manifest is manifest.json: what was built from what. It holds no secret
// and no timestamp, so identical builds give identical manifests.
type manifest struct {
	PibakeVersion string `json:"pibake_version"`
	Cluster       string `json:"cluster"`
	RecipeHash    string `json:"recipe_hash"`
	// Token says where the cluster token comes from: "recipe" or
	// "generated" (kept in .pibake/token); TokenID identifies a generated
	// one, so a different token file is noticed before it rebuilds every
	// node with a token the running cluster does not know.
	Token   string `json:"token"`
	TokenID string `json:"token_id,omitempty"`
	// CAHash is the hash of the CA pibake generated for the cluster,
	// which the joining nodes pin; empty with cluster.ca = "none".
	CAHash string         `json:"ca_hash,omitempty"`
	Base   manifestBase   `json:"base_image"`
	Nodes  []manifestNode `json:"nodes"`
	// Flashes are what pibake flash wrote, oldest first (see flashing.go).
	Flashes []manifestFlash `json:"flashes,omitempty"`
}

// manifestFlash is one target pibake flash wrote: the only timestamped
// record in the manifest, and only there once a device was flashed.
type manifestFlash struct {
	Node string `json:"node"`
	// Build is the build id of the image written (its inputs' first 16
	// hex digits, as the node reports it at first boot): pibake watch
	// takes a card flashed from a build not in the manifest's nodes as
	// the node's current one.
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

type manifestBase struct {
	Source    string        `json:"source"`
	FinalURL  string        `json:"final_url,omitempty"`
	SHA256    string        `json:"sha256"`
	Style     diskimg.Style `json:"style"`
	OSRelease string        `json:"os_release"`
}

type manifestNode struct {
	Hostname    string         `json:"hostname"`
	Role        string         `json:"role"`
	State       string         `json:"state"`
	IP          string         `json:"ip"`
	Joins       string         `json:"joins,omitempty"`
	ClusterInit bool           `json:"cluster_init,omitempty"`
	Method      recipes.Method `json:"method"`
	// CA is the node's part in the generated CA: firstboot.CACarries,
	// firstboot.CAPins or empty.
	CA       string `json:"ca,omitempty"`
	File     string `json:"file"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	Bmap     string `json:"bmap"`
	XZ       string `json:"xz,omitempty"`
	XZSHA256 string `json:"xz_sha256,omitempty"`
	XZSize   int64  `json:"xz_size,omitempty"`
	// Released is the date every file in the image is stamped with (the
	// base image's, or SOURCE_DATE_EPOCH's), as YYYY-MM-DD.
	Released string `json:"released,omitempty"`
	// Inputs hashes everything the image is made from; its first 16 hex
	// digits are the node's build id.
	Inputs string `json:"inputs"`
}

func readManifest(dir string) manifest {
	var m manifest
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err == nil {
		json.Unmarshal(b, &m) // a damaged manifest only means rebuilding
	}
	return m
}

func (m *manifest) find(host string) *manifestNode {
	for i := range m.Nodes {
		if m.Nodes[i].Hostname == host {
			return &m.Nodes[i]
		}
	}
	return nil
}

func (m *manifest) remove(host string) {
	for i := range m.Nodes {
		if m.Nodes[i].Hostname == host {
			m.Nodes = append(m.Nodes[:i], m.Nodes[i+1:]...)
			return
		}
	}
}

func (m *manifest) set(e manifestNode) {
	m.remove(e.Hostname)
	m.Nodes = append(m.Nodes, e)
}
