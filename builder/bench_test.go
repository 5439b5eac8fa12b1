package builder

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/testimage"
)

// BenchmarkMarginalNode measures one more node from a warm cache (the base
// image fetched and decompressed already) against `cp --sparse=always` of
// the same image in the same run. The goal: ratio ≤ 1.2.
func BenchmarkMarginalNode(b *testing.B) {
	img := buildtest.BenchImage(b)
	r := buildtest.BenchRecipe(b, 1)
	opt := Options{OutDir: filepath.Join(b.TempDir(), "out"), Jobs: 1, Force: true, Version: "bench", Image: img,
		Base: base.Options{Cache: base.Cache{Dir: filepath.Join(b.TempDir(), "cache")}}}
	if _, err := Build(context.Background(), r, opt); err != nil { // warm the cache
		b.Fatal(err)
	}
	// Each copy leaves its written data to the disk: sync between runs
	// (untimed) so neither pays for the other's write-back.
	settle := func() {
		b.StopTimer()
		syscall.Sync()
		b.StartTimer()
	}
	// cpTime times `cp --sparse=always` of the image to a new file; with
	// durable, and a sync of it after, as pibake syncs every image.
	cpTime := func(durable bool) time.Duration {
		settle()
		dst := filepath.Join(b.TempDir(), "cp.img")
		defer os.Remove(dst)
		start := time.Now()
		buildtest.Command(b, "cp", "--sparse=always", img, dst)
		if durable {
			buildtest.Command(b, "sync", dst)
		}
		return time.Since(start)
	}
	var node, cp, cpSync time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		opt.OutDir = filepath.Join(b.TempDir(), "out") // one more node: a new file, as cp's is
		settle()
		start := time.Now()
		if _, err := Build(context.Background(), r, opt); err != nil {
			b.Fatal(err)
		}
		node += time.Since(start)
		cp += cpTime(false)
		cpSync += cpTime(true)
	}
	b.ReportMetric(node.Seconds()/float64(b.N), "node-s/op")
	b.ReportMetric(cp.Seconds()/float64(b.N), "cp-s/op")
	b.ReportMetric(cpSync.Seconds()/float64(b.N), "cp+sync-s/op")
	b.ReportMetric(node.Seconds()/cp.Seconds(), "ratio")
	b.ReportMetric(node.Seconds()/cpSync.Seconds(), "ratio-vs-cp+sync")
}

// BenchmarkBuildPeakRSS runs `pibake build` of a 6-node recipe with
// --jobs 2 and reports the process's peak resident memory. The issue's
// goal: ≤ 150 MiB.
func BenchmarkBuildPeakRSS(b *testing.B) {
	img := buildtest.BenchImage(b)
	bin := filepath.Join(b.TempDir(), "pibake")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/pibake").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v %s", err, out)
	}
	r := buildtest.BenchRecipe(b, 6)
	recipe := r.Files[0]
	cache := filepath.Join(b.TempDir(), "cache")
	var peak int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := filepath.Join(b.TempDir(), "out")
		cmd := exec.Command(bin, "build", recipe, "--image", img, "--out", out, "--cache", cache, "--jobs", "2", "-q")
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pibake build: %v\n%s", err, o)
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			peak = max(peak, ru.Maxrss*1024) // KiB on Linux
		}
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MiB")
}

// BenchmarkCompressNode measures what --compress adds to one node built
// from a multi-block .img.xz base (the blocks past the boot partition are
// reused), against the node built without it and against `xz -T0 -6` of
// the same node image, in the same run. The goal: --compress adds
// less than a plain node costs (added/plain < 1).
func BenchmarkCompressNode(b *testing.B) {
	xzTool := testimage.Tool(b, "xz")
	p := filepath.Join(b.TempDir(), "base.img")
	spec := testimage.Bookworm()
	spec.RootMiB, spec.FillMiB = 512, 256
	if err := testimage.Build(p, spec); err != nil {
		b.Fatal(err)
	}
	// As pi-gen compresses: multi-threaded, so multi-block.
	buildtest.Command(b, "sh", "-c", xzTool+" -T0 -1 --block-size=24MiB -k "+p)
	r := buildtest.BenchRecipe(b, 1)
	opt := Options{Jobs: 2, Force: true, Version: "bench", Image: p + ".xz",
		Base: base.Options{Cache: base.Cache{Dir: filepath.Join(b.TempDir(), "cache")}}}
	opt.OutDir = filepath.Join(b.TempDir(), "warm")
	if _, err := Build(context.Background(), r, opt); err != nil { // warm the cache
		b.Fatal(err)
	}
	var plain, compressed, xzWhole time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, compress := range []bool{false, true} {
			o := opt
			o.OutDir, o.Compress = filepath.Join(b.TempDir(), "out"), compress
			b.StopTimer()
			syscall.Sync()
			b.StartTimer()
			start := time.Now()
			res, err := Build(context.Background(), r, o)
			if err != nil {
				b.Fatal(err)
			}
			if !compress {
				plain += time.Since(start)
				continue
			}
			compressed += time.Since(start)
			start = time.Now()
			buildtest.Command(b, "sh", "-c", xzTool+" -T0 -6 -c "+res[0].File+" >/dev/null")
			xzWhole += time.Since(start)
		}
	}
	added := compressed - plain
	n := float64(b.N)
	b.ReportMetric(plain.Seconds()/n, "plain-node-s/op")
	b.ReportMetric(added.Seconds()/n, "compress-added-s/op")
	b.ReportMetric(xzWhole.Seconds()/n, "xz-T0-6-s/op")
	b.ReportMetric(added.Seconds()/plain.Seconds(), "added/plain")
	b.ReportMetric(added.Seconds()/xzWhole.Seconds(), "added/xz")
}
