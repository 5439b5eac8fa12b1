package builder

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/sparse"
	"github.com/pibake/pibake/internal/testimage"
)

// TestCompressTouchesFewBlocks builds --compress nodes from a Raspberry Pi
// OS-shaped base (firmware, kernels, overlays, and the free space pi-gen
// leaves: old initramfs and cmdline.txt clusters mid-partition), compressed
// by xz in 8 MiB blocks (pi-gen's are 24 MiB, as BenchmarkCompressDistro's:
// smaller blocks are a stricter test of where the edit lands, and a third
// of the recompression to wait for). The edit must change only the
// block holding the FAT and one that held nothing but zeros in the base,
// where the new files and the root directory's later clusters go (before
// they were moved, the root directory's last cluster lay among firmware
// files in a gap pi-gen left, and the new files with it; without steering,
// go-diskfs fills the first gap: a third block). Each build reports why it
// compressed each block; every .img.xz passes xz -t and decompresses to
// its .img; the boot partition is fsck.fat-clean; a second build is
// byte-identical.
func TestCompressTouchesFewBlocks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 600 MiB image")
	}
	xzTool := testimage.Tool(t, "xz")
	p := filepath.Join(t.TempDir(), "base.img")
	spec := testimage.Bookworm()
	spec.Distro, spec.RootMiB, spec.FillMiB = true, 96, 32
	if err := testimage.Build(p, spec); err != nil {
		t.Fatal(err)
	}
	buildtest.Command(t, xzTool, "-T2", "-0", "--block-size=8MiB", "-k", p)
	r := buildtest.BenchRecipe(t, 2)
	build := func() []NodeResult {
		opt := Options{Jobs: 2, Version: "test", Image: p + ".xz", Compress: true, OutDir: filepath.Join(t.TempDir(), "out"),
			Base: base.Options{Cache: base.Cache{Dir: filepath.Join(t.TempDir(), "cache")}}}
		res, err := Build(context.Background(), r, opt)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first, second := build(), build()
	for i, n := range first {
		s := n.XZBlocks
		if s == nil || s.NoBase != "" {
			t.Fatalf("%s: no block statistics (%+v)", n.Hostname, s)
		}
		t.Logf("%s: %s", n.Hostname, describeXZ(*s))
		if len(s.Compressed) != 2 || s.Copied+len(s.Compressed) != s.Blocks {
			t.Fatalf("%s: %d of %d blocks compressed again; want 2 (the FAT's, and the one of zeros the new clusters went to)", n.Hostname, len(s.Compressed), s.Blocks)
		}
		for _, b := range s.Compressed {
			if len(b.Why) == 0 || len(b.Changed) == 0 {
				t.Errorf("%s: block %d compressed again without a reason", n.Hostname, b.Index)
			}
		}
		if !strings.Contains(strings.Join(s.Compressed[0].Why, ","), "FAT") {
			t.Errorf("%s: block %d's changes do not name the FAT: %v", n.Hostname, s.Compressed[0].Index, s.Compressed[0].Why)
		}
		for _, b := range s.Compressed[1:] {
			if !allZero(t, p, b.Start, b.End) {
				t.Errorf("%s: block %d (MiB %d-%d) compressed again held data in the base; want the new clusters where the base has only zeros", n.Hostname, b.Index, b.Start>>20, b.End>>20)
			}
		}
		if out, err := exec.Command(xzTool, "-t", n.XZ).CombinedOutput(); err != nil {
			t.Fatalf("xz -t %s: %v\n%s", n.XZ, err, out)
		}
		dec := filepath.Join(t.TempDir(), "dec.img")
		f, _ := os.Create(dec)
		cmd := exec.Command(xzTool, "-T0", "-dc", n.XZ)
		cmd.Stdout = f
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		testimage.Cmp(t, dec, n.File)
		testimage.FsckFAT(t, n.File, spec.BootStart*testimage.SectorSize, 512<<20)
		a, _, _ := files.SHA256(context.Background(), n.XZ)
		b, _, _ := files.SHA256(context.Background(), second[i].XZ)
		if a != b {
			t.Errorf("%s: two builds made different .img.xz files", n.Hostname)
		}
	}
}

// allZero reports whether [start, end) of the file at path is all zeros.
func allZero(t *testing.T, path string, start, end int64) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, end-start)
	if _, err := f.ReadAt(b, start); err != nil {
		t.Fatal(err)
	}
	return sparse.IsZero(b)
}
