package diskimg

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

// TestApplyPlacement: where an edit's new clusters go (fat.Steer). With
// room past the base's data, everything the edit changes lies either at
// the partition's start (boot sector, FATs, the root directory's first
// cluster) or in one 24 MiB block of the image that held only zeros: so
// --compress compresses again the first block and one of zeros. That
// holds for a root directory of many clusters with deleted entries (its
// later clusters are moved), and two copies come out byte-identical.
// When the room past the data is short (a gap mid-partition, the rest
// full) or the partition is nearly full, steering gives way: the edit
// still fits, fsck.fat is silent and every file reads back.
func TestApplyPlacement(t *testing.T) {
	nested := Edit{Files: []File{{Path: "a/b/c/f.txt", Data: bytes.Repeat([]byte("f"), 2000)}, {Path: "e1"}, {Path: "e2"}, {Path: "e3"}}}
	for _, tc := range []struct {
		name    string
		edit    Edit
		prepare func(t *testing.T, at string, free, need int64)
		inBlock bool // every change past the root's first cluster in one block of zeros
	}{
		{name: "room past the data", edit: payloadEdit(), inBlock: true},
		{name: "a root directory of many clusters", edit: payloadEdit(), inBlock: true, prepare: manyRootEntries},
		{name: "nearly full", edit: payloadEdit(), prepare: func(t *testing.T, at string, free, need int64) {
			mcopyFilled(t, at, "filler.bin", free-need-64<<10)
		}},
		{name: "a gap mid-partition, the edit's room at the end", edit: nested, prepare: func(t *testing.T, at string, free, need int64) {
			mcopyFilled(t, at, "gap.bin", 8<<20)
			mcopyFilled(t, at, "rest.bin", free-8<<20-need)
			runOK(t, "mdel", "-i", at, "::gap.bin")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := testimage.For(t, testimage.Bookworm())
			ro := openRW(t, img)
			boot := ro.BootPartition()
			free, err := ro.FreeBootBytes()
			files, _, perr := ro.plan(tc.edit)
			need := ro.need(files)
			layout := ro.fat.Layout()
			rootEnd := boot.Offset() + layout.DataStartSector*layout.SectorBytes + ro.ClusterBytes()
			ro.Close()
			if err != nil || perr != nil {
				t.Fatal(err, perr)
			}
			if tc.prepare != nil {
				tc.prepare(t, fmt.Sprintf("%s@@%d", img, boot.Offset()), free, need)
			}
			base, twin := filepath.Join(t.TempDir(), "base.img"), filepath.Join(t.TempDir(), "twin.img")
			for _, p := range []string{base, twin} {
				if err := testimage.CopySparse(p, img); err != nil {
					t.Fatal(err)
				}
			}
			apply(t, img, tc.edit)
			fsckFAT(t, img, boot)
			for _, f := range tc.edit.Files {
				if got := mtype(t, img, boot, f.Path); got != string(f.Data) {
					t.Errorf("mtype ::%s = %d bytes; want the %d written", f.Path, len(got), len(f.Data))
				}
			}
			apply(t, twin, tc.edit)
			if !sameFile(t, img, twin) {
				t.Error("the same edit of two copies of the base made different bytes")
			}
			if tc.inBlock {
				checkOneZeroBlock(t, base, img, rootEnd, boot.Offset()+boot.Size())
			}
		})
	}
}

// checkOneZeroBlock: every byte that differs between base and img in
// [from, to) lies in one 24 MiB block of the image, all zeros in base.
func checkOneZeroBlock(t *testing.T, base, img string, from, to int64) {
	t.Helper()
	a, b := mustOpen(t, base), mustOpen(t, img)
	defer a.Close()
	defer b.Close()
	const block = 24 << 20
	x, y := make([]byte, 512), make([]byte, 512)
	first, last := int64(-1), int64(-1)
	for off := from; off < to; off += 512 {
		a.ReadAt(x, off)
		b.ReadAt(y, off)
		if !bytes.Equal(x, y) {
			if first < 0 {
				first = off
			}
			last = off
		}
	}
	if first < 0 {
		t.Fatal("the edit changed nothing past the root directory's first cluster")
	}
	k := first / block
	if last >= (k+1)*block {
		t.Errorf("the edit changed bytes %d to %d past the root directory's first cluster: more than the one 24 MiB block %d", first, last, k)
	}
	whole := make([]byte, block)
	a.ReadAt(whole, k*block)
	if !bytes.Equal(whole, make([]byte, block)) {
		t.Errorf("the edit's new clusters are in block %d (bytes %d to %d), which held data in the base", k, first, last)
	}
}

// manyRootEntries adds 120 long-named files to the root directory and
// deletes every third, as a grown Raspberry Pi OS boot partition has a
// root directory of several clusters among its files.
func manyRootEntries(t *testing.T, at string, _, _ int64) {
	dir := t.TempDir()
	args := []string{"-i", at}
	for i := 0; i < 120; i++ {
		n := filepath.Join(dir, fmt.Sprintf("a-long-firmware-name-%03d.dat", i))
		os.WriteFile(n, bytes.Repeat([]byte{byte(i)}, 3000), 0o644)
		args = append(args, n)
	}
	runOK(t, "mcopy", append(args, "::")...)
	for i := 0; i < 120; i += 3 {
		runOK(t, "mdel", "-i", at, fmt.Sprintf("::a-long-firmware-name-%03d.dat", i))
	}
}

// mcopyFilled writes a file of n bytes of data as name into the FAT at
// "img@@offset".
func mcopyFilled(t *testing.T, at, name string, n int64) {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, bytes.Repeat([]byte("x"), int(n)), 0o644); err != nil {
		t.Fatal(err)
	}
	runOK(t, "mcopy", "-i", at, p, "::"+name)
}

func runOK(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := runTool(t, name, args...); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
