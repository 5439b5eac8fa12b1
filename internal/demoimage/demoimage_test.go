package demoimage

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/testimage"
)

// TestDeterministic: two generations are byte-identical; fsck.fat and
// e2fsck (which verifies the metadata checksums) find nothing to fix; and
// pibake reads the image as the release it stands for.
func TestDeterministic(t *testing.T) {
	for _, spec := range []testimage.Spec{testimage.Bookworm(), testimage.Trixie()} {
		t.Run(spec.Name, func(t *testing.T) {
			dir := t.TempDir()
			a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
			// go-diskfs stamps what it writes with SOURCE_DATE_EPOCH, else
			// the clock: two different ones stand for two runs' clocks.
			for i, p := range []string{a, b} {
				t.Setenv("SOURCE_DATE_EPOCH", []string{"1600000000", "1700000000"}[i])
				if err := Build(p, spec); err != nil {
					t.Fatal(err)
				}
			}
			ab, _ := os.ReadFile(a)
			bb, _ := os.ReadFile(b)
			if i := firstDiff(ab, bb); i >= 0 {
				t.Errorf("two generations differ, first at byte %d", i)
			}
			im, err := diskimg.Open(a, false)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			r, err := im.DetectRelease()
			if err != nil {
				t.Fatal(err)
			}
			if r.Style != diskimg.Style(spec.Name) || r.Codename != spec.Name || r.Hostname != "raspberrypi" || r.Bootable() != nil {
				t.Errorf("read as %+v", r)
			}
			if got := testimage.Mtype(t, a, spec.BootStart*testimage.SectorSize, "config.txt"); got != spec.ConfigTxt() {
				t.Errorf("config.txt reads %q", got)
			}
			testimage.FsckFAT(t, a, spec.BootStart*testimage.SectorSize, spec.BootSectors()*testimage.SectorSize)
			testimage.E2fsck(t, a, spec.RootStart()*testimage.SectorSize)
		})
	}
}

// firstDiff is the offset of the first byte where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
