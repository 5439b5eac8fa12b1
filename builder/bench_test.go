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

// BenchmarkMarginalNode measures what one more node costs a build from a
// warm cache (the base fetched and decompressed already), as a fleet
// grows: a marginalN-node build minus a marginalM-node build, per node,
// with the default --jobs, against `cp --sparse=always` of the same
// 1.5 GiB image (768 MiB of data) in the same run. Fixed costs (the
// lock, the identity, the recipe's hash, the base's checks) cancel out;
// what is left is what a 1,000-node fleet pays 1,000 times.
//
// It reports wall time (issue 29's figure: ratio, goal at most 0.9) and
// CPU time (cpu-ratio: the process's user+system seconds per marginal
// node over cp's), which other work on a shared machine hardly moves.
// The guard compares CPU with CPU in the same run, never a wall-clock
// limit: a run whose marginal node costs more than maxNodeCPURatio × cp's
// CPU fails, which an image read again, a second hash or a key stretch per
// node would each do.
func BenchmarkMarginalNode(b *testing.B) {
	img := buildtest.BenchImage(b)
	tmp := b.TempDir()
	opt := Options{Force: true, Version: "bench", Image: img,
		Base: base.Options{Cache: base.Cache{Dir: filepath.Join(tmp, "cache")}}}
	// build builds n nodes into a new directory (every node a new file,
	// as cp's is), removed afterwards, untimed.
	build := func(n int) cost {
		o := opt
		o.OutDir = filepath.Join(tmp, "out")
		settle(b)
		c := measure(func() {
			if _, err := Build(context.Background(), buildtest.BenchRecipe(b, n), o); err != nil {
				b.Fatal(err)
			}
		})
		b.StopTimer()
		os.RemoveAll(o.OutDir)
		b.StartTimer()
		return c
	}
	build(1) // warm the cache
	var m, n, cp, cpSync cost
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m = m.add(build(marginalM))
		n = n.add(build(marginalN))
		cp = cp.add(cpCost(b, img, false))
		cpSync = cpSync.add(cpCost(b, img, true))
	}
	per := float64(b.N)
	node := cost{wall: (n.wall - m.wall) / time.Duration(marginalN-marginalM), cpu: (n.cpu - m.cpu) / time.Duration(marginalN-marginalM)}
	ratio, cpuRatio := node.wall.Seconds()/cp.wall.Seconds()*per, node.cpu.Seconds()/cp.cpu.Seconds()*per
	b.ReportMetric(node.wall.Seconds()/per, "node-s/op")
	b.ReportMetric(cp.wall.Seconds()/per, "cp-s/op")
	b.ReportMetric(cpSync.wall.Seconds()/per, "cp+sync-s/op")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(node.wall.Seconds()/cpSync.wall.Seconds()*per, "ratio-vs-cp+sync")
	b.ReportMetric(node.cpu.Seconds()/per, "node-cpu-s/op")
	b.ReportMetric(cp.cpu.Seconds()/per, "cp-cpu-s/op")
	b.ReportMetric(cpuRatio, "cpu-ratio")
	b.Logf("marginal node %.3f s wall, %.3f s CPU (%d nodes %.3f s, %d nodes %.3f s); cp --sparse=always %.3f s wall, %.3f s CPU; cp + sync %.3f s: ratio %.2f, vs cp + sync %.2f, CPU ratio %.2f",
		node.wall.Seconds()/per, node.cpu.Seconds()/per, marginalN, n.wall.Seconds()/per, marginalM, m.wall.Seconds()/per,
		cp.wall.Seconds()/per, cp.cpu.Seconds()/per, cpSync.wall.Seconds()/per, ratio, node.wall.Seconds()/cpSync.wall.Seconds()*per, cpuRatio)
	if cpuRatio > maxNodeCPURatio {
		b.Errorf("one more node costs %.2f× the CPU of cp --sparse=always of the image (same run); at most %.2f× is expected", cpuRatio, maxNodeCPURatio)
	}
}

// The marginal node is a marginalN-node build minus a marginalM-node one,
// per node. Its CPU is bounded by maxNodeCPURatio × cp's, measured on a
// 2-core machine shared with other work: the whole-image SHA-256 alone is
// 2.2–3× cp's CPU (1.5 GiB, holes included, against cp's 768 MiB copy),
// the copy about cp's own, reading the base for the hash a third; all
// told 4.1–4.7×. Hashing the image a second time would add about 2.5 and
// fail; smaller regressions (a read, a sync, a key stretch per node) are
// TestMarginalNodeWork's, counted rather than timed.
const (
	marginalM, marginalN = 2, 6
	maxNodeCPURatio      = 6.0
)

// cost is wall and CPU time.
type cost struct{ wall, cpu time.Duration }

func (c cost) add(d cost) cost { return cost{c.wall + d.wall, c.cpu + d.cpu} }

// measure is what f costs this process.
func measure(f func()) cost {
	cpu0, start := processCPU(), time.Now()
	f()
	return cost{wall: time.Since(start), cpu: processCPU() - cpu0}
}

// processCPU is the user and system time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// settle syncs (untimed) so that no timed step pays for an earlier one's
// write-back.
func settle(b *testing.B) {
	b.StopTimer()
	syscall.Sync()
	b.StartTimer()
}

// cpCost is what `cp --sparse=always` of img to a new file costs; with
// durable, and a sync of it after, as pibake syncs every image.
func cpCost(b *testing.B, img string, durable bool) cost {
	settle(b)
	dst := filepath.Join(b.TempDir(), "cp.img")
	defer os.Remove(dst)
	start := time.Now()
	cmd := exec.Command("cp", "--sparse=always", img, dst)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("cp: %v %s", err, out)
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if durable {
		buildtest.Command(b, "sync", dst)
	}
	return cost{wall: time.Since(start), cpu: cpu}
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
