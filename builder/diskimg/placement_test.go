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
// cluster) or from the first 24 MiB boundary of the image past the data
// on: an xz block of zeros in the base, so --compress compresses again
// the first block and one of zeros. With the partition filled until just
// the edit fits, it still fits (steering gives way), fsck.fat is silent
// and every file reads back.
func TestApplyPlacement(t *testing.T) {
	for _, tc := range []struct {
		name       string
		leaveBytes int64 // fill the boot partition until this much is free past the edit's need; -1: no filler
	}{
		{name: "room past the data", leaveBytes: -1},
		{name: "nearly full", leaveBytes: 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := testimage.Bookworm()
			img := testimage.For(t, spec)
			ro := openRW(t, img)
			boot, e := ro.BootPartition(), payloadEdit()
			free, err := ro.FreeBootBytes()
			need := ro.need(e.Files)
			layout := ro.fat.Layout()
			rootEnd := boot.Offset() + layout.DataStartSector*layout.SectorBytes + ro.ClusterBytes()
			ro.Close()
			if err != nil {
				t.Fatal(err)
			}
			if tc.leaveBytes >= 0 {
				filler := filepath.Join(t.TempDir(), "filler")
				os.WriteFile(filler, bytes.Repeat([]byte("x"), int(free-need-tc.leaveBytes)), 0o644)
				if out, err := runTool(t, "mcopy", "-i", fmt.Sprintf("%s@@%d", img, boot.Offset()), filler, "::filler.bin"); err != nil {
					t.Fatalf("mcopy: %v %s", err, out)
				}
			}
			base := filepath.Join(t.TempDir(), "base.img")
			if err := testimage.CopySparse(base, img); err != nil {
				t.Fatal(err)
			}
			apply(t, img, e)
			fsckFAT(t, img, boot)
			for _, f := range e.Files {
				if got := mtype(t, img, boot, f.Path); got != string(f.Data) {
					t.Errorf("mtype ::%s = %d bytes; want the %d written", f.Path, len(got), len(f.Data))
				}
			}
			if tc.leaveBytes >= 0 {
				return
			}
			// Every change past the root directory's first cluster is in
			// one 24 MiB block of the image, all zeros in the base.
			a, b := mustOpen(t, base), mustOpen(t, img)
			defer a.Close()
			defer b.Close()
			const block = 24 << 20
			x, y := make([]byte, 512), make([]byte, 512)
			first, last := int64(-1), int64(-1)
			for off := rootEnd; off < boot.Offset()+boot.Size(); off += 512 {
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
				t.Errorf("the edit changed bytes %d to %d, past the root directory's first cluster: more than the one 24 MiB block %d", first, last, k)
			}
			whole := make([]byte, block)
			a.ReadAt(whole, k*block)
			if !bytes.Equal(whole, make([]byte, block)) {
				t.Errorf("the edit's new clusters are in block %d (bytes %d to %d), which held data in the base", k, first, last)
			}
		})
	}
}
