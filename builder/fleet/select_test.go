package fleet

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/recipes"
)

// TestSelectNodesByBlock: --node takes a hostname or a node block's label,
// which selects every node its count makes.
func TestSelectNodesByBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.hcl")
	os.WriteFile(path, []byte(`
node "srv" {
  role = "server"
  ip   = "10.0.0.10/24"
}
node "edge" {
  role  = "agent"
  count = 3
}
node "solo" {
  role     = "agent"
  hostname = "lonely"
}
`), 0o600)
	r, diags := recipes.Load(hclparse.NewParser(), path)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{nil, "srv edge-1 edge-2 edge-3 lonely"},
		{[]string{"edge"}, "edge-1 edge-2 edge-3"},
		{[]string{"EDGE-2", "srv"}, "srv edge-2"},
		{[]string{"solo"}, "lonely"},
		{[]string{"edge", "edge-1"}, "edge-1 edge-2 edge-3"},
	} {
		nodes, err := Select(r, tc.names, Shard{})
		var got []string
		for _, n := range nodes {
			got = append(got, n.Hostname)
		}
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("--node %v: %v, %v; want %s", tc.names, got, err, tc.want)
		}
	}
	_, err := Select(r, []string{"edg"}, Shard{})
	if !errors.Is(err, ErrUnknownNode) || !strings.Contains(err.Error(), "edge-1, edge-2, edge-3, lonely; its node blocks (each selects all its nodes): edge, solo") {
		t.Errorf("--node edg: %v", err)
	}
}
