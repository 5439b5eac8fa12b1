package diskimg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/builder/diskimg/fat"
	"github.com/pibake/pibake/internal/testimage"
)

var specs = []testimage.Spec{testimage.Bookworm(), testimage.Trixie()}

// payloadEdit is a realistic edit: a directory tree with long names, an
// empty file, a file replaced by a longer one and one by a shorter one,
// and cmdline arguments added and removed.
func payloadEdit() Edit {
	return Edit{
		Files: []File{
			{Path: "pibake/activate.sh", Data: []byte(strings.Repeat("# the activator\n", 700))},
			{Path: "pibake/firstboot.sh", Data: []byte(strings.Repeat("# first boot\n", 900))},
			{Path: "pibake/pibake-firstboot.service", Data: []byte("[Unit]\nDescription=x\n")},
			{Path: "pibake/k3s-config.yaml", Data: []byte("token: \"secret\"\n")},
			{Path: "pibake/airgap/install.sh", Data: []byte(strings.Repeat("#!/bin/sh\n", 5000))},
			{Path: "ssh"},
			{Path: "userconf.txt", Data: []byte("pi:$6$abc$def\n")},
			{Path: "network-config", Data: []byte(strings.Repeat("network:\n  version: 2\n", 50))},
			{Path: "config.txt", Data: []byte(strings.Repeat("dtparam=audio=on\n", 400))}, // longer
			{Path: "issue.txt", Data: []byte("short\n")},                                  // shorter
		},
		CmdlineAdd:    []string{"cgroup_memory=1", "cgroup_enable=memory", "systemd.run=/boot/firmware/pibake/activate.sh"},
		CmdlineRemove: []string{"quiet"},
	}
}

func openRW(t *testing.T, img string) *Image {
	t.Helper()
	im, err := Open(img, true)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func apply(t *testing.T, img string, e Edit) {
	t.Helper()
	im := openRW(t, img)
	if err := im.Apply(e); err != nil {
		im.Close()
		t.Fatalf("Apply: %v", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestApply is the acceptance test, on both release styles.
func TestApply(t *testing.T) {
	for _, spec := range specs {
		t.Run(spec.Name, func(t *testing.T) {
			img := testimage.For(t, spec)
			base := filepath.Join(t.TempDir(), "base.img")
			if err := testimage.CopySparse(base, img); err != nil {
				t.Fatal(err)
			}
			e := payloadEdit()
			apply(t, img, e)

			im, err := Open(img, false)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			boot := im.BootPartition()
			fsckFAT(t, img, boot)
			e2fsckRoot(t, img, im.RootPartition())

			// mtools reads back exactly what was written.
			for _, f := range e.Files {
				if got := mtype(t, img, boot, f.Path); got != string(f.Data) {
					t.Errorf("mtype ::%s = %d bytes; want the %d written", f.Path, len(got), len(f.Data))
				}
			}
			listing, err := runTool(t, "mdir", "-b", "-i", fmt.Sprintf("%s@@%d", img, boot.Offset()), "::pibake")
			if err != nil || !strings.Contains(listing, "pibake-firstboot.service") {
				t.Errorf("mdir ::pibake does not list the long name pibake-firstboot.service: %v\n%s", err, listing)
			}
			wantCmdline := strings.Replace(spec.Cmdline(), " quiet", "", 1)
			wantCmdline = strings.TrimSpace(wantCmdline) + " cgroup_memory=1 cgroup_enable=memory systemd.run=/boot/firmware/pibake/activate.sh\n"
			if got := mtype(t, img, boot, "cmdline.txt"); got != wantCmdline {
				t.Errorf("cmdline.txt = %q; want %q", got, wantCmdline)
			}
			// Files the edit did not touch read back as in the base.
			for _, name := range []string{"kernel8.img", "start4.elf", "overlays/README", "bcm2711-rpi-4-b.dtb"} {
				if mtype(t, img, boot, name) != mtype(t, base, boot, name) {
					t.Errorf("%s changed", name)
				}
			}
			compareOutsideBoot(t, base, img, boot, im.fat)
		})
	}
}

// compareOutsideBoot proves that nothing outside the boot partition changed
// (MBR, gap, the whole root partition) and that inside it only the FSInfo
// sectors, the FATs and data clusters changed, no more clusters than the
// edit can account for.
func compareOutsideBoot(t *testing.T, base, img string, boot Partition, v *fat.Volume) {
	l := v.Layout()
	t.Helper()
	a, b := mustOpen(t, base), mustOpen(t, img)
	defer a.Close()
	defer b.Close()
	fi, _ := a.Stat()
	if d := diffRegion(t, a, b, 0, boot.Offset(), 512); d != 0 {
		t.Errorf("%d sectors before the boot partition changed", d)
	}
	if d := diffRegion(t, a, b, boot.Offset()+boot.Size(), fi.Size()-boot.Offset()-boot.Size(), 1<<20); d != 0 {
		t.Errorf("%d MiB after the boot partition (the root partition) changed", d)
	}
	// Reserved sectors: only the FSInfo sector and its backup may change.
	for s := int64(0); s < l.ReservedSectors; s++ {
		if s == l.FSInfoSector || s == l.BackupBootSector+l.FSInfoSector {
			continue
		}
		if diffRegion(t, a, b, boot.Offset()+s*512, 512, 512) != 0 {
			t.Errorf("reserved sector %d of the boot partition changed", s)
		}
	}
	dataStart := boot.Offset() + l.DataStartSector*l.SectorBytes
	changed := diffRegion(t, a, b, dataStart, boot.Size()-l.DataStartSector*l.SectorBytes, v.ClusterBytes())
	// What the edit writes, in clusters, with one cluster per directory and
	// per replaced file's old tail as slack.
	limit := int64(8)
	for _, f := range payloadEdit().Files {
		limit += (int64(len(f.Data)) + v.ClusterBytes() - 1) / v.ClusterBytes()
	}
	if int64(changed) > limit {
		t.Errorf("%d data clusters changed; the edit accounts for at most %d", changed, limit)
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// diffRegion counts the blocks of the given size that differ in
// [off, off+n). It reads 4 MiB at a time and compares blocks in memory.
func diffRegion(t *testing.T, a, b *os.File, off, n, block int64) int {
	t.Helper()
	chunk := (4 << 20) / block * block
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	diffs := 0
	for p := off; p < off+n; p += chunk {
		m := chunk
		if off+n-p < m {
			m = off + n - p
		}
		if _, err := a.ReadAt(ba[:m], p); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if _, err := b.ReadAt(bb[:m], p); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		for q := int64(0); q < m; q += block {
			e := q + block
			if e > m {
				e = m
			}
			if !bytes.Equal(ba[q:e], bb[q:e]) {
				diffs++
			}
		}
	}
	return diffs
}

// sameFile compares two files byte for byte (faster than hashing 600 MiB).
func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	fa, fb := mustOpen(t, a), mustOpen(t, b)
	defer fa.Close()
	defer fb.Close()
	sa, _ := fa.Stat()
	sb, _ := fb.Stat()
	return sa.Size() == sb.Size() && diffRegion(t, fa, fb, 0, sa.Size(), 4<<20) == 0
}

// snapshot keeps a sparse copy of an image to compare with later.
func snapshot(t *testing.T, img string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "snapshot.img")
	if err := testimage.CopySparse(p, img); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestApplyReproducible applies the same edit to two copies of the base,
// more than one FAT time tick (2 s) apart and with a different
// SOURCE_DATE_EPOCH in the environment, and compares every byte.
func TestApplyReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 2 s for the clock to move")
	}
	firsts := map[string]string{}
	for _, spec := range specs {
		firsts[spec.Name] = testimage.For(t, spec)
		apply(t, firsts[spec.Name], payloadEdit())
	}
	time.Sleep(2100 * time.Millisecond)
	t.Setenv("SOURCE_DATE_EPOCH", "1234567890")
	for _, spec := range specs {
		second := testimage.For(t, spec)
		apply(t, second, payloadEdit())
		if !sameFile(t, firsts[spec.Name], second) {
			t.Errorf("%s: the same edit at a different clock gave different bytes", spec.Name)
		}
		// Every entry the edit wrote carries the base image's newest
		// timestamp: neither today's date nor SOURCE_DATE_EPOCH's.
		checkStamped(t, second, spec, "::pibake", newestBootTime(t, testimage.For(t, spec)))
	}
}

// newestBootTime reads the newest timestamp of a base image's boot
// partition.
func newestBootTime(t *testing.T, img string) time.Time {
	t.Helper()
	im, err := Open(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	stamp, err := im.NewestBootTime()
	if err != nil {
		t.Fatal(err)
	}
	return stamp
}

// checkStamped lists dir with mtools and checks that every entry in it,
// "." and ".." included, carries stamp (FAT keeps 2-second steps).
func checkStamped(t *testing.T, img string, spec testimage.Spec, dir string, stamp time.Time) {
	t.Helper()
	out, err := runTool(t, "mdir", "-a", "-i", fmt.Sprintf("%s@@%d", img, spec.BootStart*512), dir)
	if err != nil {
		t.Fatalf("mdir %s: %v\n%s", dir, err, out)
	}
	// mdir prints the hour space-padded: "2021-03-04   5:06".
	u := stamp.UTC()
	want := fmt.Sprintf("%s  %2d:%02d", u.Format("2006-01-02"), u.Hour(), u.Minute())
	entries := 0
	for _, line := range strings.Split(out, "\n") {
		if !regexp.MustCompile(`\d{4}-\d{2}-\d{2}`).MatchString(line) {
			continue // headers and totals
		}
		entries++
		if !strings.Contains(line, want) {
			t.Errorf("%s: %q is not stamped %s", spec.Name, line, want)
		}
	}
	if entries < 3 {
		t.Errorf("%s: mdir %s listed %d entries:\n%s", spec.Name, dir, entries, out)
	}
}

// TestApplyExplicitTime stamps entries with Edit.Time.
func TestApplyExplicitTime(t *testing.T) {
	img := testimage.For(t, testimage.Bookworm())
	e := payloadEdit()
	e.Time = time.Date(2021, 3, 4, 5, 6, 8, 0, time.UTC)
	apply(t, img, e)
	checkStamped(t, img, testimage.Bookworm(), "::pibake", e.Time)
}

func TestApplyTooLarge(t *testing.T) {
	img := testimage.For(t, testimage.Trixie())
	before := snapshot(t, img)
	big := filepath.Join(t.TempDir(), "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(600 << 20); err != nil { // sparse, larger than the partition
		t.Fatal(err)
	}
	f.Close()
	im := openRW(t, img)
	err = im.Apply(Edit{Files: []File{{Path: "pibake/a", Data: []byte("a")}, {Path: "pibake/airgap/k3s", Source: big}}, CmdlineAdd: []string{"x=1"}})
	im.Close()
	if err == nil || !strings.Contains(err.Error(), "KiB are free; nothing was written") {
		t.Fatalf("Apply(too large) = %v; want a free-space error", err)
	}
	if !sameFile(t, img, before) {
		t.Error("a refused edit changed the image")
	}
}

func TestApplyRefusesBadCmdlineArgs(t *testing.T) {
	img := testimage.For(t, testimage.Bookworm())
	before := snapshot(t, img)
	for _, arg := range []string{"my.firstboot=1", "resize2", "a b"} {
		im := openRW(t, img)
		err := im.Apply(Edit{CmdlineAdd: []string{arg}})
		im.Close()
		if err == nil {
			t.Errorf("Apply(cmdline %q) succeeded", arg)
		}
	}
	if !sameFile(t, img, before) {
		t.Error("a refused edit changed the image")
	}
}

func TestPatchCmdline(t *testing.T) {
	tests := []struct {
		in, want    string
		add, remove []string
	}{
		{in: "a b c\n", add: []string{"d"}, want: "a b c d\n"},
		{in: "a b c", add: []string{"b", "d", "d"}, want: "a b c d\n"},
		{in: "a  b\tc\n", remove: []string{"b"}, want: "a c\n"},
		{in: "a x=1 b x=1\n", remove: []string{"x=1"}, add: []string{"x=2"}, want: "a b x=2\n"},
		{in: "", add: []string{"a"}, want: "a\n"},
		{in: "root=PARTUUID=1-02 systemd.run=/x systemd.unit=kernel-command-line.target quiet", remove: []string{"systemd.run=/x", "systemd.unit=kernel-command-line.target"}, want: "root=PARTUUID=1-02 quiet\n"},
	}
	for _, tt := range tests {
		if got := patchCmdline(tt.in, tt.add, tt.remove); got != tt.want {
			t.Errorf("PatchCmdline(%q, +%v, -%v) = %q; want %q", tt.in, tt.add, tt.remove, got, tt.want)
		}
	}
}

// TestReadBootFileSizes reads back files of awkward sizes: go-diskfs's own
// reads return garbage past the end of some of them (see ReadBootFile).
func TestReadBootFileSizes(t *testing.T) {
	img := testimage.For(t, testimage.Bookworm())
	sizes := []int{0, 1, 255, 256, 511, 512, 513, 638, 2047, 2048, 2049, 5000, 70000}
	var e Edit
	for _, n := range sizes {
		e.Files = append(e.Files, File{Path: fmt.Sprintf("sizes/f%d", n), Data: bytes.Repeat([]byte{byte(n%250 + 1)}, n)})
	}
	apply(t, img, e)
	im, err := Open(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for _, f := range e.Files {
		got, err := im.ReadBootFile(f.Path)
		if err != nil || !bytes.Equal(got, f.Data) {
			t.Errorf("ReadBootFile(%s) = %d bytes, %v; want %d", f.Path, len(got), err, len(f.Data))
		}
	}
	if _, err := im.ReadBootFile("sizes/missing"); !errors.Is(err, ErrNotExist) {
		t.Errorf("ReadBootFile(missing) = %v; want ErrNotExist", err)
	}
	fsckFAT(t, img, im.BootPartition())
}

// TestApplyRemove deletes a file and a directory tree, leaving fsck.fat
// silent and every cluster freed.
func TestApplyRemove(t *testing.T) {
	img := testimage.For(t, testimage.Trixie())
	im := openRW(t, img)
	freeBefore, err := im.FreeBootBytes()
	im.Close()
	if err != nil {
		t.Fatal(err)
	}
	apply(t, img, payloadEdit())
	apply(t, img, Edit{Remove: []string{"pibake", "userconf.txt", "ssh", "not-there"}})
	im, err = Open(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	fsckFAT(t, img, im.BootPartition())
	for _, p := range []string{"pibake/activate.sh", "userconf.txt", "ssh"} {
		if _, err := im.ReadBootFile(p); !errors.Is(err, ErrNotExist) {
			t.Errorf("%s still readable after Remove: %v", p, err)
		}
	}
	// What is left of the edit: the replaced config.txt, issue.txt and network-config.
	freeAfter, _ := im.FreeBootBytes()
	if lost := freeBefore - freeAfter; lost > 64<<10 {
		t.Errorf("%d bytes fewer free after removing the payload; clusters leaked", lost)
	}
}
