package diskimg

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/configtxt"
	"github.com/pibake/pibake/internal/testimage"
)

// pi5Block is a block as firstboot renders one (firstboot.ConfigTxt).
var pi5Block = []string{"[all]", "[pi5]", "dtparam=pciex1", "dtparam=pciex1_gen=2", "[all]"}

// TestApplyConfigTxt edits config.txt on release-shaped images: mtools
// reads back the stock file, unchanged, followed by the block; fsck.fat
// is clean; the same edit of the same base gives the same bytes; an edit
// without a block leaves config.txt's directory entry and data alone.
func TestApplyConfigTxt(t *testing.T) {
	for _, spec := range specs {
		t.Run(spec.Name, func(t *testing.T) {
			img := testimage.For(t, spec)
			untouched := filepath.Join(t.TempDir(), "untouched.img")
			if err := testimage.CopySparse(untouched, img); err != nil {
				t.Fatal(err)
			}
			twin := filepath.Join(t.TempDir(), "twin.img")
			if err := testimage.CopySparse(twin, img); err != nil {
				t.Fatal(err)
			}
			e := Edit{CmdlineAdd: []string{"usb-storage.quirks=152d:0578:u"}, ConfigTxt: pi5Block}
			apply(t, img, e)
			apply(t, twin, e)
			apply(t, untouched, Edit{CmdlineAdd: []string{"cgroup_memory=1"}})

			im, err := Open(img, false)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			boot := im.BootPartition()
			fsckFAT(t, img, boot)
			cfg := mtype(t, img, boot, "config.txt")
			stock := spec.ConfigTxt()
			if !strings.HasPrefix(cfg, stock) {
				t.Errorf("config.txt does not start with the stock file:\n%s", cfg)
			}
			if want, _ := configtxt.Patch([]byte(stock), pi5Block); cfg != string(want) {
				t.Errorf("config.txt = %q; want %q", cfg, want)
			}
			if got := mtype(t, untouched, boot, "config.txt"); got != stock {
				t.Errorf("an edit without a block changed config.txt to %q", got)
			}
			// mdir shows the entry's size and time stamp: unchanged too.
			if got, want := mdirEntry(t, untouched, boot, "config.txt"), mdirEntry(t, testimage.For(t, spec), boot, "config.txt"); got != want {
				t.Errorf("an edit without a block changed config.txt's entry to %q; want %q", got, want)
			}
			a, b := mustOpen(t, img), mustOpen(t, twin)
			defer a.Close()
			defer b.Close()
			if d := diffRegion(t, a, b, 0, boot.Offset()+boot.Size(), 512); d != 0 {
				t.Errorf("the same edit of the same base gave %d different sectors", d)
			}
		})
	}
}

// mdirEntry is mtools' listing line of one file: name, size, date, time.
func mdirEntry(t *testing.T, img string, p Partition, name string) string {
	t.Helper()
	out, err := runTool(t, "mdir", "-i", fmt.Sprintf("%s@@%d", img, p.Offset()), "::"+name)
	if err != nil {
		t.Fatalf("mdir ::%s: %v\n%s", name, err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.ToLower(l), strings.ToLower(strings.TrimSuffix(name, ".txt"))) {
			return l
		}
	}
	t.Fatalf("mdir ::%s lists no entry for it:\n%s", name, out)
	return ""
}
