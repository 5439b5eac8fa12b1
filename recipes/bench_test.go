package recipes

import (
	"os"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
)

// BenchmarkLoadFleet loads the 101-node fleet example. BenchmarkParseFleet,
// parsing alone, is its baseline: the ratio between the two is the cost of
// decoding, expanding and validating the nodes.
func BenchmarkLoadFleet(b *testing.B) {
	b.Setenv("K3S_TOKEN", "bench-token-0123456789abcdef")
	for b.Loop() {
		if _, diags := Load(hclparse.NewParser(), "examples/fleet.hcl"); diags.HasErrors() {
			b.Fatal(diags)
		}
	}
}

func BenchmarkParseFleet(b *testing.B) {
	src, err := os.ReadFile("examples/fleet.hcl")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, diags := hclparse.NewParser().ParseHCL(src, "fleet.hcl"); diags.HasErrors() {
			b.Fatal(diags)
		}
	}
}
