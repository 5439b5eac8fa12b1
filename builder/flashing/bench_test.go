package flashing

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/flash"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/testimage"
)

// BenchmarkFlash measures pibake flash of N nodes to N targets at once
// (written, synced, read back past the page cache and verified) against
// `dd bs=4M oflag=direct conv=fsync` of one built node image to one
// target, in the same run: the ratio is flash-N's time over dd's. The
// targets are loop devices over sparse files (root; else plain files):
// what is measured is pibake's work and the host disk, not a card's
// speed. flash writes the mapped ranges, has the kernel zero the rest
// (BLKZEROOUT) and reads every byte back; dd writes the whole image,
// holes included, and verifies nothing.
func BenchmarkFlash(b *testing.B) {
	img := buildtest.BenchImage(b)
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			r := buildtest.BenchRecipe(b, n)
			opt := builder.Options{OutDir: filepath.Join(b.TempDir(), "out"), Jobs: 2, Version: "bench", Image: img,
				Base: base.Options{Cache: base.Cache{Dir: filepath.Join(b.TempDir(), "cache")}}}
			if _, err := builder.Build(context.Background(), r, opt); err != nil { // warm the cache; the image dd writes
				b.Fatal(err)
			}
			built := filepath.Join(opt.OutDir, "s.img")
			fi, err := os.Stat(built)
			if err != nil {
				b.Fatal(err)
			}
			hosts := []string{"s"}
			for i := 1; i < n; i++ {
				hosts = append(hosts, fmt.Sprintf("a-%d", i))
			}
			var targets []Target
			for _, h := range hosts {
				tg, err := flash.Host.Inspect(benchTarget(b, fi.Size()))
				if err != nil {
					b.Fatal(err)
				}
				targets = append(targets, Target{Node: h, Target: tg})
			}
			ddTarget := benchTarget(b, fi.Size())
			settle := func() {
				b.StopTimer()
				syscall.Sync()
				b.StartTimer()
			}
			var flashTime, ddTime time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				settle()
				start := time.Now()
				results, err := Flash(context.Background(), r, flashOptions(opt, Options{Targets: targets, AllowFixed: true}))
				if err != nil {
					b.Fatal(err)
				}
				flashTime += time.Since(start)
				for _, res := range results {
					if res.State != flash.Verified {
						b.Fatalf("%s: %s %v", res.Target.Path, res.State, res.Err)
					}
				}
				settle()
				start = time.Now()
				args := []string{"if=" + built, "of=" + ddTarget, "bs=4M", "conv=fsync,notrunc", "status=none"}
				if strings.HasPrefix(ddTarget, "/dev/") {
					args = append(args, "oflag=direct")
				}
				buildtest.Command(b, "dd", args...)
				ddTime += time.Since(start)
			}
			b.ReportMetric(flashTime.Seconds()/float64(b.N), "flash-s/op")
			b.ReportMetric(ddTime.Seconds()/float64(b.N), "dd-s/op")
			b.ReportMetric(flashTime.Seconds()/ddTime.Seconds(), "ratio")
		})
	}
}

// benchTarget is a loop device over a sparse file (as root), else the
// file itself.
func benchTarget(b *testing.B, size int64) string {
	b.Helper()
	backing := filepath.Join(b.TempDir(), "target")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		b.Fatal(err)
	}
	if os.Geteuid() != 0 {
		return backing
	}
	out, err := exec.Command(testimage.Tool(b, "losetup"), "--find", "--show", backing).CombinedOutput()
	if err != nil {
		b.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	b.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}
