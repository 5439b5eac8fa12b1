package diskimg

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

// pi5Block is a block as firstboot renders one (firstboot.ConfigTxt).
var pi5Block = []string{"[all]", "[pi5]", "dtparam=pciex1", "dtparam=pciex1_gen=2", "[all]"}

// TestPatchConfigTxt: the block goes after the base, which stays byte for
// byte; patching again changes nothing; no lines remove the block; the
// block reads back.
func TestPatchConfigTxt(t *testing.T) {
	tests := []struct {
		name string
		base string
		// kept is what of the base stands before the block.
		kept string
	}{
		{name: "bookworm stock", base: testimage.Bookworm().ConfigTxt()},
		{name: "trixie stock", base: testimage.Trixie().ConfigTxt()},
		{name: "no newline at the end", base: "arm_64bit=1\n[all]", kept: "arm_64bit=1\n[all]\n"},
		{name: "ends with a blank line", base: "arm_64bit=1\n\n"},
		{name: "empty", base: ""},
		{name: "crlf", base: "dtparam=audio=on\r\n[all]\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kept := tt.kept
			if kept == "" {
				kept = tt.base
			}
			nl := "\n"
			if strings.Contains(tt.base, "\r\n") {
				nl = "\r\n"
			}
			want := kept + nl + configBegin + nl + strings.Join(pi5Block, nl) + nl + configEnd + nl
			got, err := PatchConfigTxt([]byte(tt.base), pi5Block)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("PatchConfigTxt = %q; want %q", got, want)
			}
			if !bytes.HasPrefix(got, []byte(tt.base)) {
				t.Errorf("the base is not kept byte for byte before the block")
			}
			again, err := PatchConfigTxt(got, pi5Block)
			if err != nil || !bytes.Equal(again, got) {
				t.Errorf("patching twice = %q, %v; want the same bytes", again, err)
			}
			lines, ok, err := ConfigTxtBlock(got)
			if err != nil || !ok || !slices.Equal(lines, pi5Block) {
				t.Errorf("ConfigTxtBlock = %q, %v, %v; want %q", lines, ok, err, pi5Block)
			}
			other, err := PatchConfigTxt(got, []string{"[all]", "usb_max_current_enable=1", "[all]"})
			if err != nil || strings.Contains(string(other), "pciex1") || !bytes.HasPrefix(other, []byte(kept)) {
				t.Errorf("a new block on a patched file = %q, %v; want the old block replaced", other, err)
			}
			removed, err := PatchConfigTxt(got, nil)
			if err != nil || string(removed) != kept {
				t.Errorf("no lines on a patched file = %q, %v; want the base %q", removed, err, kept)
			}
			if _, ok, _ := ConfigTxtBlock([]byte(tt.base)); ok {
				t.Error("ConfigTxtBlock found a block in the base")
			}
		})
	}
}

// TestPatchConfigTxtRefuses a config.txt whose block is broken, and a
// line that could break one.
func TestPatchConfigTxtRefuses(t *testing.T) {
	stock := testimage.Trixie().ConfigTxt()
	patched, err := PatchConfigTxt([]byte(stock), pi5Block)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, cfg string
		lines     []string
		err       string
	}{
		{name: "begin without end", cfg: strings.Replace(string(patched), configEnd+"\n", "", 1), err: "has no end"},
		{name: "end without begin", cfg: stock + configEnd + "\n", err: "ends at line 55 without its beginning"},
		{name: "two blocks", cfg: string(patched) + string(patched[len(stock):]), err: "a second pibake block begins at line 64"},
		{name: "a line with a newline", cfg: stock, lines: []string{"[all]\nkernel=x"}, err: "not one line of its own"},
		{name: "a marker as a line", cfg: stock, lines: []string{configEnd}, err: "not one line of its own"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lines := tt.lines
			if lines == nil {
				lines = pi5Block
			}
			got, err := PatchConfigTxt([]byte(tt.cfg), lines)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("PatchConfigTxt = %q, %v; want an error with %q", got, err, tt.err)
			}
		})
	}
}

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
			if want := "\n" + configBegin + "\n" + strings.Join(pi5Block, "\n") + "\n" + configEnd + "\n"; cfg[len(stock):] != want {
				t.Errorf("config.txt after the stock file = %q; want %q", cfg[len(stock):], want)
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
