package xzfile

import (
	"context"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkDecompressVsXZ decompresses the same multi-block .img.xz (made
// by xz -T0 -6, as pi-gen does, 8 blocks of 24 MiB) with pibake and with
// `xz -T0 -dc` in the same run, and reports both times and their ratio.
// The goal: ratio ≤ 1.5 on a 2-core machine.
func BenchmarkDecompressVsXZ(b *testing.B) {
	xzBin, err := exec.LookPath("xz")
	if err != nil {
		b.Skip("xz not found; run make deps")
	}
	dir := b.TempDir()
	raw := filepath.Join(dir, "image.img")
	if err := os.WriteFile(raw, imageLike(192<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	src := raw + ".xz"
	if out, err := exec.Command(xzBin, "-T0", "-6", "-k", raw).CombinedOutput(); err != nil {
		b.Fatalf("xz: %v %s", err, out)
	}
	b.ResetTimer()
	var pibake, xzT0 time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := Decompress(context.Background(), src, filepath.Join(dir, "pibake.img"), 0, nil); err != nil {
			b.Fatal(err)
		}
		pibake += time.Since(start)

		out, err := os.Create(filepath.Join(dir, "xz.img"))
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(xzBin, "-T0", "-dc", src)
		cmd.Stdout = out
		start = time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		xzT0 += time.Since(start)
		out.Close()
	}
	b.ReportMetric(pibake.Seconds()/float64(b.N), "pibake-s/op")
	b.ReportMetric(xzT0.Seconds()/float64(b.N), "xz-T0-s/op")
	b.ReportMetric(pibake.Seconds()/xzT0.Seconds(), "ratio")
}

// imageLike is data shaped like a disk image: 40% zero runs, 40% text-like
// runs, 20% incompressible (binaries, already-compressed files).
func imageLike(size int) []byte {
	rng := rand.New(rand.NewSource(2))
	buf := make([]byte, size)
	words := []byte("the quick raspberry pi boots debian with systemd and k3s; /usr/lib/aarch64-linux-gnu/libc.so.6 ")
	for off := 0; off < size; {
		n := 4096 * (1 + rng.Intn(256))
		if off+n > size {
			n = size - off
		}
		switch k := rng.Intn(10); {
		case k < 4:
		case k < 8:
			for i := off; i < off+n; i++ {
				buf[i] = words[(i*7+rng.Intn(3))%len(words)]
			}
		default:
			rng.Read(buf[off : off+n])
		}
		off += n
	}
	return buf
}
