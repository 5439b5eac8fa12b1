package recipes

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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

// BenchmarkLoadNodeBlocks loads recipes of 500 and 5000 node blocks, one
// node each (the shape that used to take quadratic time), and reports the
// cost per node: equal figures at both sizes mean validation is linear.
func BenchmarkLoadNodeBlocks(b *testing.B) {
	for _, n := range []int{500, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "fleet.hcl")
			var src strings.Builder
			src.WriteString("cluster {\n  token = \"bench-token-0123456789abcdef\"\n  cluster_cidr = \"10.64.0.0/11\"\n}\n")
			src.WriteString("node \"srv\" {\n  role = \"server\"\n  ip   = \"10.0.0.1/16\"\n}\n")
			for i := 1; i < n; i++ {
				fmt.Fprintf(&src, "node \"n%d\" {\n  role   = \"agent\"\n  ip     = \"10.0.%d.%d/16\"\n  labels = { zone = \"z%d\" }\n}\n", i, 1+i/250, 1+i%250, i%7)
			}
			if err := os.WriteFile(path, []byte(src.String()), 0o600); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			for b.Loop() {
				if _, diags := Load(hclparse.NewParser(), path); diags.HasErrors() {
					b.Fatal(diags)
				}
			}
			runtime.ReadMemStats(&m1)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/node")
			b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(b.N)/float64(n), "B/node")
		})
	}
}
