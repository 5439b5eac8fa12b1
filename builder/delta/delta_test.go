package delta

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/testimage"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimage.Cleanup()
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

// fixture is a base image and a node image made from it by writing a
// payload to its boot partition, as a build does.
type fixture struct {
	base, node string
	rec        *Base
	n          *Node
}

var (
	fixtureOnce sync.Once
	shared      fixture
	sharedDir   string
)

// newFixture returns copies of one fixture made once per test process.
func newFixture(t *testing.T) fixture {
	t.Helper()
	fixtureOnce.Do(func() {
		d, err := os.MkdirTemp("", "pibake-delta-")
		if err != nil {
			t.Fatal(err)
		}
		sharedDir = d
		shared = makeFixture(t, d)
	})
	f := shared
	n := *shared.n
	f.n = &n
	dir := t.TempDir()
	f.base, f.node = filepath.Join(dir, "base.img"), filepath.Join(dir, "node.img")
	for dst, src := range map[string]string{f.base: shared.base, f.node: shared.node} {
		if err := testimage.CopySparse(dst, src); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func makeFixture(t *testing.T, dir string) fixture {
	base := filepath.Join(dir, "base.img")
	if err := testimage.CopySparse(base, testimage.For(t, testimage.Bookworm())); err != nil {
		t.Fatal(err)
	}
	node := strings.TrimSuffix(base, ".img") + "-node.img"
	if err := testimage.CopySparse(node, base); err != nil {
		t.Fatal(err)
	}
	im, err := diskimg.Open(node, true)
	if err != nil {
		t.Fatal(err)
	}
	err = im.Apply(diskimg.Edit{
		Files: []diskimg.File{
			{Path: "pibake/firstboot.sh", Data: []byte(strings.Repeat("#!/bin/sh\necho first boot\n", 300))},
			{Path: "pibake/k3s-config.yaml", Data: []byte("token: a-weak-secret\n")},
			{Path: "userconf.txt", Data: []byte("pi:*\n")},
		},
		CmdlineAdd: []string{"cgroup_memory=1", "cgroup_enable=memory"},
		Time:       time.Date(2025, 5, 6, 0, 0, 0, 0, time.UTC),
	})
	if err != nil {
		t.Fatal(err)
	}
	boot := im.BootPartition()
	im.Close()
	ctx := context.Background()
	rec, err := HashBase(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	n, err := ForNode(ctx, rec, base, node, boot.Offset()+boot.Size()+4096)
	if err != nil {
		t.Fatal(err)
	}
	n.SHA256 = fileSum(t, node)
	return fixture{base: base, node: node, rec: rec, n: n}
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func compare(t *testing.T, f fixture, path string, ref *Reference) *Result {
	t.Helper()
	c, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fi, _ := c.Stat()
	res, err := Compare(context.Background(), c, fi.Size(), f.rec, f.n, ref)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func flip(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, at)
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// TestWrittenIsTheBootEdit: the recorded ranges are inside the boot
// partition, and an untouched node image passes Compare.
func TestWrittenIsTheBootEdit(t *testing.T) {
	f := newFixture(t)
	spec := testimage.Bookworm()
	bootStart, bootEnd := spec.BootStart*512, spec.RootStart()*512
	if len(f.n.Written) == 0 {
		t.Fatal("no written ranges recorded for a node with a payload")
	}
	for _, w := range f.n.Written {
		if w.Start < bootStart || w.End > bootEnd || w.Start%BlockSize != 0 || w.End%BlockSize != 0 {
			t.Errorf("written range %+v is not whole blocks inside the boot partition [%d, %d)", w, bootStart, bootEnd)
		}
	}
	if res := compare(t, f, f.node, nil); !res.OK(f.n) {
		t.Errorf("Compare of the node image itself = %+v", res)
	}
	// ForNode is deterministic.
	again, err := ForNode(context.Background(), f.rec, f.base, f.node, bootEnd+4096)
	if err != nil {
		t.Fatal(err)
	}
	again.SHA256 = f.n.SHA256
	a, _ := (&Record{Base: *f.rec, Nodes: []Node{*f.n}}).Marshal()
	b, _ := (&Record{Base: *f.rec, Nodes: []Node{*again}}).Marshal()
	if string(a) != string(b) {
		t.Errorf("ForNode of the same images differs")
	}
	if _, err := Parse(a); err != nil {
		t.Errorf("Parse of Marshal: %v", err)
	}
}

// TestTamperingNamed flips one byte at a time in the root partition, in
// the boot partition outside pibake's writes and inside them, and checks
// each is named with its partition: to within a chunk without a
// reference, to the byte with the base or the built image at hand.
func TestTamperingNamed(t *testing.T) {
	f := newFixture(t)
	spec := testimage.Bookworm()
	rootAt := spec.RootStart()*512 + 10<<20 + 123
	bootAt := spec.BootStart*512 + 300<<20 + 7
	pibakeAt := f.n.Written[len(f.n.Written)-1].Start + 5
	tests := []struct {
		name, where string
		at          int64
		pibake      bool
	}{
		{name: "root", at: rootAt, where: "partition 2 (ext4 rootfs)"},
		{name: "boot", at: bootAt, where: "partition 1 (vfat bootfs)"},
		{name: "pibake", at: pibakeAt, where: "partition 1 (vfat bootfs)", pibake: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := strings.TrimSuffix(f.node, ".img") + "-" + tt.name + ".img"
			if err := testimage.CopySparse(bad, f.node); err != nil {
				t.Fatal(err)
			}
			flip(t, bad, tt.at)
			res := compare(t, f, bad, nil)
			if len(res.Diffs) == 0 || res.OK(f.n) {
				t.Fatalf("Compare without a reference found nothing: %+v", res)
			}
			found := false
			for _, d := range res.Diffs {
				if d.Start <= tt.at && tt.at < d.End && d.Where == tt.where && d.Pibake == tt.pibake {
					found = true
				}
			}
			if !found {
				t.Errorf("Compare without a reference = %v; want a range holding byte %d in %s", res.Diffs, tt.at, tt.where)
			}
			refs := map[string]string{"built image": f.node}
			if !tt.pibake {
				refs["base image"] = f.base
			}
			for name, p := range refs {
				r, _ := os.Open(p)
				res := compare(t, f, bad, &Reference{R: r, Node: p == f.node})
				r.Close()
				want := Diff{Start: tt.at, End: tt.at + 1, Where: tt.where, Pibake: tt.pibake, Exact: true}
				if len(res.Diffs) != 1 || res.Diffs[0] != want {
					t.Errorf("Compare with the %s = %v; want exactly %v", name, res.Diffs, want)
				} else {
					t.Logf("%s: %s", name, res.Diffs[0])
				}
			}
		})
	}
}

// TestDeviceLongerThanImage: a card is larger than the image; only the
// image's bytes count.
func TestDeviceLongerThanImage(t *testing.T) {
	f := newFixture(t)
	dev, err := os.OpenFile(f.node, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	dev.Write([]byte(strings.Repeat("old card data", 1000)))
	dev.Close()
	if res := compare(t, f, f.node, nil); !res.OK(f.n) {
		t.Errorf("Compare of a longer device = %+v", res)
	}
}

func TestWrongBaseReference(t *testing.T) {
	f := newFixture(t)
	other := strings.TrimSuffix(f.base, ".img") + "-other.img"
	testimage.CopySparse(other, f.base)
	spec := testimage.Bookworm()
	flip(t, other, spec.RootStart()*512+10<<20)
	bad := strings.TrimSuffix(f.node, ".img") + "-bad.img"
	testimage.CopySparse(bad, f.node)
	flip(t, bad, spec.RootStart()*512+10<<20)
	r, _ := os.Open(other)
	defer r.Close()
	c, _ := os.Open(bad)
	defer c.Close()
	_, err := Compare(context.Background(), c, f.n.Size, f.rec, f.n, &Reference{R: r})
	if err == nil || !strings.Contains(err.Error(), "is not this build's base") {
		t.Errorf("Compare with another base as reference = %v", err)
	}
}

func TestMerge(t *testing.T) {
	a := &Record{Base: Base{SHA256: "a"}, Nodes: []Node{{Hostname: "x", SHA256: "1"}}}
	if err := a.Merge(&Record{Base: Base{SHA256: "a"}, Nodes: []Node{{Hostname: "y"}, {Hostname: "x", SHA256: "1"}}}); err != nil || len(a.Nodes) != 2 {
		t.Errorf("Merge = %v, %d nodes", err, len(a.Nodes))
	}
	if err := a.Merge(&Record{Base: Base{SHA256: "a"}, Nodes: []Node{{Hostname: "x", SHA256: "2"}}}); err == nil {
		t.Errorf("Merge accepted a node recorded differently")
	}
	if err := a.Merge(&Record{Base: Base{SHA256: "b"}}); err == nil {
		t.Errorf("Merge accepted another base")
	}
}
