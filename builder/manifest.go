package builder

import (
	"encoding/json"
	"fmt"
	"github.com/pibake/pibake/recipes"
	"os"
	"path/filepath"
	"strings"

	"github.com/pibake/pibake/internal/atomicfile"
)

// manifest is manifest.json: what was built from what. It holds no secret
// and no timestamp, so identical builds give identical manifests.
type manifest struct {
	PibakeVersion string         `json:"pibake_version"`
	Cluster       string         `json:"cluster"`
	RecipeHash    string         `json:"recipe_hash"`
	Base          manifestBase   `json:"base_image"`
	Nodes         []manifestNode `json:"nodes"`
}

type manifestBase struct {
	Source    string `json:"source"`
	FinalURL  string `json:"final_url,omitempty"`
	SHA256    string `json:"sha256"`
	Style     string `json:"style"`
	OSRelease string `json:"os_release"`
}

type manifestNode struct {
	Hostname    string         `json:"hostname"`
	Role        string         `json:"role"`
	IP          string         `json:"ip"`
	Joins       string         `json:"joins,omitempty"`
	ClusterInit bool           `json:"cluster_init,omitempty"`
	Method      recipes.Method `json:"method"`
	File        string         `json:"file"`
	Size        int64          `json:"size"`
	SHA256      string         `json:"sha256"`
	Bmap        string         `json:"bmap"`
	XZ          string         `json:"xz,omitempty"`
	XZSHA256    string         `json:"xz_sha256,omitempty"`
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

func (m manifest) find(host string) *manifestNode {
	for i := range m.Nodes {
		if m.Nodes[i].Hostname == host {
			return &m.Nodes[i]
		}
	}
	return nil
}

// writeOutputs writes SHA256SUMS (checkable with sha256sum -c) and
// manifest.json, each atomically.
func writeOutputs(dir string, m manifest) error {
	var sums strings.Builder
	for _, n := range m.Nodes {
		fmt.Fprintf(&sums, "%s  %s\n", n.SHA256, n.File)
		if n.XZ != "" {
			fmt.Fprintf(&sums, "%s  %s\n", n.XZSHA256, n.XZ)
		}
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sums.String()), 0o644); err != nil {
		return fmt.Errorf("write SHA256SUMS: %w", err)
	}
	if m.Nodes == nil {
		m.Nodes = []manifestNode{}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "manifest.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write manifest.json: %w", err)
	}
	return nil
}
