package builder

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/supplytest"
	"github.com/pibake/pibake/internal/testimage"
)

// BenchmarkSupplyChainVsBuild measures, in one run, what issue 26's SBOMs
// and provenance add to a real 4-node build (warm cache: the base
// decompressed, its range sums and supply-chain facts kept; a 1.5 GiB
// image with 768 MiB of data and a 1.2 MB dpkg database of 600
// packages): the time Build itself spends writing the nodes' SBOMs
// (rendering, reading cmdline.txt and config.txt back, hashing, the
// part) and its records (delta.json, provenance.json, SetRecords), against
// the whole Build. Goal: ratio under 0.05. Recording each node's changes
// against the base for delta.json is reported apart (delta-ratio).
func BenchmarkSupplyChainVsBuild(b *testing.B) {
	spec := supplytest.Spec(600)
	spec.RootMiB, spec.FillMiB = 1024, 768
	img := filepath.Join(b.TempDir(), "base.img")
	if err := testimage.Build(img, spec); err != nil {
		b.Fatal(err)
	}
	r := buildtest.BenchRecipe(b, 4)
	opt := Options{Jobs: 2, Force: true, Version: "bench", Image: img,
		Base: base.Options{Cache: base.Cache{Dir: filepath.Join(b.TempDir(), "cache")}}}
	opt.OutDir = filepath.Join(b.TempDir(), "warm")
	if _, err := Build(context.Background(), r, opt); err != nil { // warm the cache
		b.Fatal(err)
	}
	var build time.Duration
	spent := &supplySpent{}
	opt.spent = spent
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		opt.OutDir = filepath.Join(b.TempDir(), "out")
		start := time.Now()
		if _, err := Build(context.Background(), r, opt); err != nil {
			b.Fatal(err)
		}
		build += time.Since(start)
	}
	n := float64(b.N)
	supply, delta := time.Duration(spent.sbomAndRecords.Load()), time.Duration(spent.delta.Load())
	b.ReportMetric(build.Seconds()/n, "build4-s/op")
	b.ReportMetric(supply.Seconds()/n, "sbom+prov-s/op")
	b.ReportMetric(supply.Seconds()/build.Seconds(), "ratio")
	b.ReportMetric(delta.Seconds()/build.Seconds(), "delta-ratio")
}
