package sbom_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/delta"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/dpkg"
	"github.com/pibake/pibake/builder/provenance"
	"github.com/pibake/pibake/builder/sbom"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/internal/supplytest"
	"github.com/pibake/pibake/internal/testimage"
	"github.com/pibake/pibake/recipes"
)

// BenchmarkSupplyChainVsBuild measures, in one run, what issue 26's SBOMs
// and provenance add to a 4-node build: a real builder.Build of four
// nodes (from a warm cache, 1.5 GiB image with 768 MiB of data and a
// 1.2 MB dpkg database of 600 packages) against the supply-chain work
// that build will do — reading the dpkg database once, rendering each
// node's payload, hashing it and writing its SBOM, and the provenance.
// Goal: ratio under 0.05. The delta.json work (the base's chunk digests,
// once per base and cacheable; each node's written ranges) is reported
// apart, as phase 2 pays it too.
func BenchmarkSupplyChainVsBuild(b *testing.B) {
	spec := supplytest.Spec(600)
	spec.RootMiB, spec.FillMiB = 1024, 768
	img := filepath.Join(b.TempDir(), "base.img")
	if err := testimage.Build(img, spec); err != nil {
		b.Fatal(err)
	}
	r := benchRecipe(b, 4)
	opt := builder.Options{Jobs: 2, Force: true, Version: "bench", Image: img,
		Base: base.Options{Cache: base.Cache{Dir: filepath.Join(b.TempDir(), "cache")}}}
	opt.OutDir = filepath.Join(b.TempDir(), "warm")
	if _, err := builder.Build(context.Background(), r, opt); err != nil { // warm the cache
		b.Fatal(err)
	}
	var build, supply, deltaBase, deltaNodes time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		opt.OutDir = filepath.Join(b.TempDir(), "out")
		start := time.Now()
		results, err := builder.Build(context.Background(), r, opt)
		if err != nil {
			b.Fatal(err)
		}
		build += time.Since(start)

		start = time.Now()
		supplyChain(b, r, img, results)
		supply += time.Since(start)

		start = time.Now()
		rec, err := delta.HashBase(context.Background(), img)
		if err != nil {
			b.Fatal(err)
		}
		deltaBase += time.Since(start)
		start = time.Now()
		for _, res := range results {
			if _, err := delta.ForNode(context.Background(), rec, img, res.File, spec.RootStart()*512+4096); err != nil {
				b.Fatal(err)
			}
		}
		deltaNodes += time.Since(start)
	}
	n := float64(b.N)
	b.ReportMetric(build.Seconds()/n, "build4-s/op")
	b.ReportMetric(supply.Seconds()/n, "sbom+prov-s/op")
	b.ReportMetric(supply.Seconds()/build.Seconds(), "ratio")
	b.ReportMetric(deltaNodes.Seconds()/build.Seconds(), "delta-nodes-ratio")
	b.ReportMetric(deltaBase.Seconds()/build.Seconds(), "delta-base-ratio")
}

// supplyChain is the SBOM and provenance work of one build of r.
func supplyChain(b *testing.B, r *recipes.Recipe, img string, results []builder.NodeResult) {
	b.Helper()
	im, err := diskimg.Open(img, false)
	if err != nil {
		b.Fatal(err)
	}
	pkgs, err := dpkg.Read(im)
	im.Close()
	if err != nil || len(pkgs) != 600 {
		b.Fatalf("dpkg.Read: %d packages, %v", len(pkgs), err)
	}
	byHost := map[string]builder.NodeResult{}
	for _, res := range results {
		byHost[res.Hostname] = res
	}
	sums := map[string]string{}
	for _, n := range r.Nodes {
		res, ok := byHost[n.Hostname]
		if !ok || res.SHA256 == "" {
			b.Fatalf("no image built for %s", n.Hostname)
		}
		p, err := firstboot.Render(&r.Cluster, &n, firstboot.Options{BuildID: "0123456789abcdef", Base: firstboot.Base{}})
		if err != nil {
			b.Fatal(err)
		}
		in := supplytest.SBOMInput(n.Hostname, res.SHA256, strings.Repeat("b", 64), pkgs)
		in.Payload = nil
		for _, f := range p.Files {
			sf := sbom.File{Path: f.Path, Size: int64(len(f.Data)), Secret: f.Mode == 0o600}
			if !sf.Secret {
				s := sha256.Sum256(f.Data)
				sf.SHA256 = hex.EncodeToString(s[:])
			}
			in.Payload = append(in.Payload, sf)
		}
		doc, err := sbom.ForNode(in)
		if err != nil {
			b.Fatal(err)
		}
		s := sha256.Sum256(doc)
		sums[sbom.FileName(n.Hostname)] = hex.EncodeToString(s[:])
		sums[filepath.Base(res.File)] = res.SHA256
	}
	if _, err := provenance.Build(supplytest.ProvenanceInput(sums, strings.Repeat("b", 64))); err != nil {
		b.Fatal(err)
	}
}

func benchRecipe(b *testing.B, nodes int) *recipes.Recipe {
	b.Helper()
	src := "cluster {\n  token = \"bench-cluster-token-0123456789abcdef\"\n}\nnode \"s\" {\n  role = \"server\"\n  ip = \"10.0.0.1/24\"\n}\n"
	src += fmt.Sprintf("node \"a\" {\n  role = \"agent\"\n  count = %d\n}\n", nodes-1)
	p := filepath.Join(b.TempDir(), "bench.hcl")
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		b.Fatal(err)
	}
	r, diags := recipes.Load(hclparse.NewParser(), p)
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	return r
}
