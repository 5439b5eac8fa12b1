package outdir_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/buildtest"
)

// The journal's crash points, without images: every step of a change to
// a node (publishing a new version, publishing byte-identical files with
// an .img.xz newly added, removing it, dropping its .img.xz, importing it
// from a shard) is stopped after step k for every k; the next Open rolls
// forward, and the directory must then hold the old node exactly when the
// journal was not yet in place, else the new one, and keep its invariant
// (buildtest.CheckInvariant: sha256sum -c, nothing unlisted, no temporary
// name). The same with real builds is builder's TestCrashPoints.

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// version is a node's files as a test makes them.
type version struct {
	img, bmap, xz string // contents; xz "" for none
}

func (v version) entry(host string) outdir.Node {
	img, bmap, xz := outdir.NodeFiles(host)
	e := outdir.Node{Hostname: host, Role: "agent", State: outdir.StateCurrent, File: img, Bmap: bmap,
		SHA256: sum([]byte(v.img)), Size: int64(len(v.img)), Inputs: sum([]byte("inputs " + v.img))}
	if v.xz != "" {
		e.XZ, e.XZSHA256, e.XZSize = xz, sum([]byte(v.xz)), int64(len(v.xz))
	}
	return e
}

// publish writes v's files as parts of d and publishes them.
func publish(d *outdir.Dir, host string, v version) error {
	e := v.entry(host)
	var parts []*outdir.Part
	for final, data := range map[string]string{e.File: v.img, e.Bmap: v.bmap, e.XZ: v.xz} {
		if final == "" {
			continue
		}
		p := d.NewPart(final)
		parts = append(parts, p)
		p.SHA256 = sum([]byte(data))
		if err := p.Write([]byte(data), 0o600); err != nil {
			for _, p := range parts {
				p.Discard()
			}
			return err
		}
	}
	return d.Publish(e, parts...)
}

var (
	old   = version{img: "agent image v1", bmap: "agent bmap v1"}
	newer = version{img: "agent image v2", bmap: "agent bmap v2", xz: "agent xz v2"}
	// same is old's bytes with an .img.xz newly asked: a reproducible
	// rebuild with --compress.
	same = version{img: old.img, bmap: old.bmap, xz: "agent xz v1"}
)

// start is a directory holding srv and agent (old), published.
func start(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	d, err := outdir.Open(context.Background(), dir, outdir.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Update(func(m *outdir.Manifest) { m.Cluster = "lab" }); err != nil {
		t.Fatal(err)
	}
	for host, v := range map[string]version{"srv": {img: "srv image", bmap: "srv bmap"}, "agent": old} {
		if err := publish(d, host, v); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// shard is an output directory holding agent as newer, to import.
func shard(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	d, err := outdir.Open(context.Background(), dir, outdir.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := publish(d, "agent", newer); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestJournalCrashPoints(t *testing.T) {
	shardDir := shard(t)
	// The start states, made once and copied for each crash point:
	// publishing them anew every time (two nodes' fsyncs) was most of
	// the test's cost.
	templates := map[version]string{old: start(t)}
	templates[same] = start(t)
	d, err := outdir.Open(context.Background(), templates[same], outdir.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = publish(d, "agent", same)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	changes := []struct {
		name   string
		change func(d *outdir.Dir) error
		want   *version // the agent after the change; nil: gone
	}{
		{"publish a new version", func(d *outdir.Dir) error { return publish(d, "agent", newer) }, &newer},
		{"identical bytes, xz newly asked", func(d *outdir.Dir) error { return publish(d, "agent", same) }, &same},
		{"remove", func(d *outdir.Dir) error { return d.Remove("agent") }, nil},
		{"drop xz", func(d *outdir.Dir) error { return d.DropXZ("agent") }, &version{img: same.img, bmap: same.bmap}},
		{"import from a shard", func(d *outdir.Dir) error {
			return d.Import(context.Background(), shardDir, outdir.ReadManifest(shardDir).Nodes[0])
		}, &newer},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each crash point in a directory of its own
			before := old
			if c.name == "drop xz" {
				before = same // a node with an .img.xz to drop
			}
			steps, _ := crashRun(t, c.change, templates[before], -1)
			if len(steps) == 0 {
				t.Fatal("the change took no step")
			}
			committed := slices.IndexFunc(steps, func(s string) bool { return strings.HasPrefix(s, "rename .publishing-agent.json.tmp") })
			for k := range steps {
				_, dir := crashRun(t, c.change, templates[before], k)
				// crashRun checked the invariant; here, which version.
				want := &before
				if k > committed {
					want = c.want
				}
				checkAgent(t, dir, want, k, steps)
			}
			t.Logf("%s: %d crash points: %s", c.name, len(steps), strings.Join(steps, ", "))
		})
	}
}

// crashRun copies the start state from template (cp -a, as the last
// process left it), runs change through a CrashFS stopped after step k
// (never, k < 0), recovers with a fresh Open and checks the invariant. It
// returns the steps asked for and the directory.
func crashRun(t *testing.T, change func(d *outdir.Dir) error, template string, k int) ([]string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "out")
	buildtest.Copy(t, template, dir)
	// Opened once where it now lies: os_list.json names its directory,
	// and the move is not the change under test.
	moved, err := outdir.Open(context.Background(), dir, outdir.Options{})
	if err != nil {
		t.Fatal(err)
	}
	moved.Close()
	fs := buildtest.NewCrashFS(k)
	d, err := outdir.Open(context.Background(), dir, outdir.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	err = change(d)
	d.Close() // the lock goes with a killed process too
	switch {
	case k < 0 && err != nil:
		t.Fatalf("the change without a crash: %v", err)
	case k >= 0 && !errors.Is(err, buildtest.ErrCrashed):
		t.Fatalf("crashed after step %d of %v: %v; want ErrCrashed", k, fs.Steps(), err)
	}
	next, err := outdir.Open(context.Background(), dir, outdir.Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("recovery after step %d: %v", k, err)
	}
	next.Close()
	buildtest.CheckInvariant(t, dir)
	return fs.Steps(), dir
}

// checkAgent checks that dir holds agent as want (nil: not at all).
func checkAgent(t *testing.T, dir string, want *version, k int, steps []string) {
	t.Helper()
	m := outdir.ReadManifest(dir)
	e := m.Node("agent")
	after := strings.Join(steps[:k], ", ")
	if want == nil {
		if e != nil || existsAny(dir, "agent.img", "agent.img.bmap", "agent.img.xz") {
			t.Errorf("crashed after %d steps (%s): agent is %+v; want it gone", k, after, e)
		}
		return
	}
	if e == nil || *e != want.entry("agent") {
		t.Errorf("crashed after %d steps (%s): agent is %+v; want %+v", k, after, e, want.entry("agent"))
		return
	}
	for name, data := range map[string]string{e.File: want.img, e.Bmap: want.bmap, e.XZ: want.xz} {
		if name == "" {
			continue
		}
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != data {
			t.Errorf("crashed after %d steps (%s): %s holds %q (%v); want %q", k, after, name, got, err, data)
		}
	}
	if want.xz == "" && existsAny(dir, "agent.img.xz") {
		t.Errorf("crashed after %d steps (%s): a stale agent.img.xz is left", k, after)
	}
}

func existsAny(dir string, names ...string) bool {
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}

// TestEmptySetHoldsNoSums: a directory whose last node goes, or that never
// had one, holds no SHA256SUMS (an empty one fails sha256sum -c: "no
// properly formatted checksum lines found"), and a manifest.json whose
// nodes are [].
func TestEmptySetHoldsNoSums(t *testing.T) {
	dir := start(t)
	d, err := outdir.Open(context.Background(), dir, outdir.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"srv", "agent"} {
		if err := d.Remove(host); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	buildtest.CheckInvariant(t, dir)
	b, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if !strings.Contains(string(b), `"nodes": []`) {
		t.Errorf("manifest.json of an empty set:\n%s", b)
	}
	// A directory an older pibake left with an empty SHA256SUMS is put
	// right when it is opened.
	os.WriteFile(filepath.Join(dir, "SHA256SUMS"), nil, 0o644)
	cmd := exec.Command("sha256sum", "-c", "SHA256SUMS")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("sha256sum -c passed on an empty SHA256SUMS: %s", out)
	}
	d, err = outdir.Open(context.Background(), dir, outdir.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	buildtest.CheckInvariant(t, dir)
}
