package flashing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/builder/flash"
	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/builder/inputs"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/testimage"
)

const threeNodes = buildtest.TwoNodes + `
node "worker" {
  role = "agent"
}
`

var threeHosts = []string{"srv", "agent", "worker"}

func flashTargets(t *testing.T, paths map[string]string) []Target {
	t.Helper()
	var targets []Target
	for _, host := range threeHosts {
		tg, err := flash.Host.Inspect(paths[host])
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, Target{Node: host, Target: tg})
	}
	return targets
}

// readManifest reads dir's manifest.json, which must be there.
func readManifest(t *testing.T, dir string) outdir.Manifest {
	t.Helper()
	if !outdir.IsOutDir(dir) {
		t.Fatalf("%s holds no manifest.json", dir)
	}
	return outdir.ReadManifest(dir)
}

// buildOptions build from s's image into a new output directory.
func buildOptions(t *testing.T, s *buildtest.ReleaseServer, cache string) builder.Options {
	return builder.Options{OutDir: filepath.Join(t.TempDir(), "out"), Jobs: 2, Version: "test", Base: s.BaseOptions(cache)}
}

// flashOptions are a build's options for flash, with o's targets, checks
// and prompt.
func flashOptions(b builder.Options, o Options) Options {
	o.Options = inputs.Options{OutDir: b.OutDir, Jobs: b.Jobs, Base: b.Base, Image: b.Image, Version: b.Version, Logf: b.Logf, Progress: b.Progress}
	o.Wait = b.Wait
	return o
}

// TestFlashBeforeBuild flashes three nodes to plain files in an empty
// output directory, then builds it: flash settled the cluster's identity
// (a generated token) as build would, and each flashed file is the built
// image byte for byte.
func TestFlashBeforeBuild(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := buildtest.LabRecipe(t, s, threeNodes)
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	dir := t.TempDir()
	paths := map[string]string{}
	for _, h := range threeHosts {
		paths[h] = filepath.Join(dir, h+".flashed")
		usedFile(t, paths[h], 64<<20) // a backup image being overwritten
	}
	results, err := Flash(context.Background(), r, flashOptions(opt, Options{Targets: flashTargets(t, paths)}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := builder.Build(context.Background(), r, opt); err != nil {
		t.Fatal(err)
	}
	m := readManifest(t, opt.OutDir)
	for i, res := range results {
		host := threeHosts[i]
		if res.State != flash.Verified || res.Source != host || res.SHA256 != m.Node(host).SHA256 {
			t.Errorf("%s: %s %v sha256 %s; want verified with the built image's %s", host, res.State, res.Err, res.SHA256, m.Node(host).SHA256)
		}
		testimage.Cmp(t, paths[host], filepath.Join(opt.OutDir, host+".img"))
	}
	if len(m.Flashes) != 3 || m.Flashes[0].Result != "verified" || m.Token != "generated" {
		t.Errorf("manifest.json flashes %+v, token %q", m.Flashes, m.Token)
	}
	// Each record names the build id the card reports (pibake watch
	// tells the current build by it), the same as build then gave it.
	for _, f := range m.Flashes {
		if e := m.Node(f.Node); e == nil || f.Build == "" || f.Build != e.BuildID() {
			t.Errorf("flash record of %s: build %q; want the built image's %+v", f.Node, f.Build, e)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(opt.OutDir, "*.part")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// loopTarget is a loop device of size bytes, all 0xA5: a used card, on
// which the image is byte-identical only if the bytes it has as zeros
// are written too.
func loopTarget(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testimage.Missing(t, "flashing loop devices needs root")
	}
	backing := filepath.Join(t.TempDir(), "backing")
	usedFile(t, backing, size)
	out, err := exec.Command(testimage.Tool(t, "losetup"), "--find", "--show", backing).CombinedOutput()
	if err != nil {
		testimage.Missing(t, fmt.Sprintf("losetup: %v: %s (no loop device support?)", err, out))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// TestFlashLoopDevices is the acceptance test: after a build,
// flash writes three loop devices at once for three nodes, each
// byte-identical to the built image of its node (cmp), each verified
// (also against the built image's SHA-256), each recorded in the
// manifest with its device.
func TestFlashLoopDevices(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := buildtest.LabRecipe(t, s, threeNodes)
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	if _, err := builder.Build(context.Background(), r, opt); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(opt.OutDir, "srv.img"))
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for _, h := range threeHosts {
		paths[h] = loopTarget(t, fi.Size()+(8<<20))
	}
	targets := flashTargets(t, paths)
	// Loop devices are not removable: refused without AllowFixed.
	if _, err := Flash(context.Background(), r, flashOptions(opt, Options{Targets: targets})); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "--allow-fixed") {
		t.Fatalf("Flash to loop devices without AllowFixed: %v; want refused, --allow-fixed", err)
	}
	results, err := Flash(context.Background(), r, flashOptions(opt, Options{Targets: targets, AllowFixed: true}))
	if err != nil {
		t.Fatal(err)
	}
	m := readManifest(t, opt.OutDir)
	for i, res := range results {
		host := threeHosts[i]
		if res.State != flash.Verified || res.SHA256 != m.Node(host).SHA256 {
			t.Errorf("%s → %s: %s %v", host, paths[host], res.State, res.Err)
		}
		testimage.Cmp(t, paths[host], filepath.Join(opt.OutDir, host+".img"))
	}
	if len(m.Flashes) != 3 {
		t.Fatalf("manifest.json records %d flashes; want 3", len(m.Flashes))
	}
	for _, f := range m.Flashes {
		if f.Result != "verified" || f.Target != paths[f.Node] || !strings.Contains(f.Serial, "backing") || f.Time == "" || f.SHA256 != m.Node(f.Node).SHA256 || f.Build != m.Node(f.Node).BuildID() {
			t.Errorf("manifest.json flash record %+v", f)
		}
	}
	buildtest.CheckInvariant(t, opt.OutDir)
}

// TestFlashChecksBuiltSum: when the output directory lists a node built
// from the same inputs, a device that reads back with another SHA-256 (as
// if flash and build wrote different bytes) fails, and is left
// unbootable.
func TestFlashChecksBuiltSum(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := buildtest.LabRecipe(t, s, buildtest.TwoNodes)
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	opt.Nodes = []string{"srv"}
	if _, err := builder.Build(context.Background(), r, opt); err != nil {
		t.Fatal(err)
	}
	opt.Nodes = nil
	// The recorded sum of srv's image, changed.
	mpath := filepath.Join(opt.OutDir, "manifest.json")
	b, _ := os.ReadFile(mpath)
	m := readManifest(t, opt.OutDir)
	os.WriteFile(mpath, []byte(strings.Replace(string(b), m.Node("srv").SHA256, strings.Repeat("0", 64), 1)), 0o644)

	target := filepath.Join(t.TempDir(), "srv.flashed")
	tg, _ := flash.Host.Inspect(target)
	results, err := Flash(context.Background(), r, flashOptions(opt, Options{Targets: []Target{{Node: "srv", Target: tg}}}))
	if !errors.Is(err, ErrTargetsFailed) || results[0].State != flash.Failed || !strings.Contains(results[0].Err.Error(), "not the 000000000000… its built image has") {
		t.Fatalf("Flash with another built sum: %v, %+v; want failed", err, results)
	}
	if hasPartitionTable(target) {
		t.Error("the failed target kept its partition table")
	}
}

// TestFlashRefusals: refused targets stop the flash before anything is
// written to any of them.
func TestFlashRefusals(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := buildtest.LabRecipe(t, s, buildtest.TwoNodes)
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	dir := t.TempDir()
	os.MkdirAll(opt.OutDir, 0o755)
	inspect := func(p string) flash.Target {
		tg, err := flash.Host.Inspect(p)
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	a := filepath.Join(dir, "a.img")
	// Symlinks from elsewhere into the output directory: to a listed
	// image, and (dangling) to one not written yet.
	os.WriteFile(filepath.Join(opt.OutDir, "srv.img"), []byte("listed image"), 0o600)
	linked, dangling := filepath.Join(dir, "linked.img"), filepath.Join(dir, "dangling.img")
	os.Symlink(filepath.Join(opt.OutDir, "srv.img"), linked)
	rel, _ := filepath.Rel(dir, filepath.Join(opt.OutDir, "agent.img"))
	os.Symlink(rel, dangling)
	tests := []struct {
		name    string
		targets []Target
		confirm func(int64, []Target) error
		want    error
		wantMsg string
	}{
		{name: "twice", targets: []Target{{Node: "srv", Target: inspect(a)}, {Node: "agent", Target: inspect(a)}}, want: ErrRefused, wantMsg: "a.img is named twice"},
		{name: "unknown node", targets: []Target{{Node: "pi-9", Target: inspect(a)}}, want: fleet.ErrUnknownNode, wantMsg: `"pi-9"; the recipe's nodes are: srv, agent`},
		{name: "in the output directory", targets: []Target{{Node: "srv", Target: inspect(filepath.Join(opt.OutDir, "agent.img"))}}, want: ErrRefused, wantMsg: "is in the output directory"},
		{name: "symlink into the output directory", targets: []Target{{Node: "srv", Target: inspect(linked)}}, want: ErrRefused, wantMsg: "linked.img is in the output directory"},
		{name: "dangling symlink into the output directory", targets: []Target{{Node: "srv", Target: inspect(dangling)}}, want: ErrRefused, wantMsg: "dangling.img is in the output directory"},
		{name: "declined", targets: []Target{{Node: "srv", Target: inspect(a)}}, confirm: func(int64, []Target) error { return errDeclined }, want: errDeclined},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Flash(context.Background(), r, flashOptions(opt, Options{Targets: tt.targets, Confirm: tt.confirm}))
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Flash = %v; want %v with %q", err, tt.want, tt.wantMsg)
			}
			if files.Exists(a) {
				t.Errorf("%s was written", a)
			}
			if files.Exists(filepath.Join(opt.OutDir, outdir.TokenFile)) {
				t.Errorf("a refused or declined flash made %s", outdir.TokenFile)
			}
		})
	}
	// The cached base image itself is never a target.
	cached, _ := filepath.Glob(filepath.Join(opt.Base.Cache.Dir, "*", "*.img"))
	if len(cached) == 0 {
		t.Fatal("no cached base image")
	}
	_, err := Flash(context.Background(), r, flashOptions(opt, Options{Targets: []Target{{Node: "srv", Target: inspect(cached[0])}}}))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "is the image being written") {
		t.Errorf("Flash to the base image: %v", err)
	}
}

var errDeclined = errors.New("declined")

// TestFlashInterrupted cancels a flash from inside its progress report,
// mid-write: the target is reported interrupted, left without a partition
// table, recorded as such, and no head file stays behind.
func TestFlashInterrupted(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := buildtest.LabRecipe(t, s, buildtest.TwoNodes)
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opt.Progress = func(task string, done, total int64) {
		if strings.HasPrefix(task, "srv → ") && done > 0 && done < total {
			cancel()
		}
	}
	target := filepath.Join(t.TempDir(), "srv.flashed")
	// A target that held a bootable image before.
	os.WriteFile(target, append(make([]byte, 510), 0x55, 0xaa), 0o600)
	tg, _ := flash.Host.Inspect(target)
	results, err := Flash(ctx, r, flashOptions(opt, Options{Targets: []Target{{Node: "srv", Target: tg}}}))
	if !errors.Is(err, context.Canceled) || len(results) != 1 || results[0].State != flash.Interrupted {
		t.Fatalf("Flash interrupted: %v, %+v; want context.Canceled, interrupted", err, results)
	}
	if hasPartitionTable(target) {
		t.Error("the interrupted target has a partition table")
	}
	m := readManifest(t, opt.OutDir)
	if len(m.Flashes) != 1 || m.Flashes[0].Result != "interrupted" || m.Flashes[0].SHA256 != "" {
		t.Errorf("manifest.json flashes: %+v", m.Flashes)
	}
	if left, _ := filepath.Glob(filepath.Join(opt.OutDir, "*.part")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// usedFile writes a file of size bytes, all 0xA5.
func usedFile(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := bytes.Repeat([]byte{0xa5}, 1<<20)
	for off := int64(0); off < size; off += int64(len(b)) {
		if _, err := f.WriteAt(b[:min(int64(len(b)), size-off)], off); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFlashImagePromptsBeforeLock: FlashImage asks before it takes the
// output directory's lock, so a prompt left open does not hold up a
// build there (the prompt here takes the lock itself).
func TestFlashImagePromptsBeforeLock(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "manifest.json"), []byte("{}\n"), 0o644)
	img := filepath.Join(dir, "srv.img")
	usedFile(t, img, 64<<10)
	os.Truncate(img, 1<<20)
	tg, err := flash.Host.Inspect(filepath.Join(t.TempDir(), "card.img"))
	if err != nil {
		t.Fatal(err)
	}
	asked := false
	confirm := func(int64, []Target) error {
		asked = true
		out, err := outdir.Open(context.Background(), dir, outdir.Options{Logf: t.Logf})
		if err != nil {
			return fmt.Errorf("while asking: %w", err)
		}
		out.Close()
		return nil
	}
	results, err := FlashImage(context.Background(), img, Options{Targets: []Target{{Target: tg}}, Confirm: confirm})
	if err != nil || !asked || len(results) != 1 || results[0].State != flash.Verified {
		t.Fatalf("FlashImage: %v, asked %v, %+v; want verified, asked without the lock held", err, asked, results)
	}
	testimage.Cmp(t, tg.Path, img)
}

// hasPartitionTable reports whether path starts with an MBR signature
// (its first byte, 0x55, is enough to tell a zeroed head).
func hasPartitionTable(path string) bool {
	head := make([]byte, 512)
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	f.ReadAt(head, 0)
	return head[510] == 0x55
}
