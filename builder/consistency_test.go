package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/files"
)

// TestConcurrentBuilds runs two builds into one directory at once: the
// second fails at once naming the first's pid, or with Wait queues behind
// it; either way every node carries the one token and the set is whole.
func TestConcurrentBuilds(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := buildtest.LabRecipe(t, s, buildtest.TwoNodes)
	cache := filepath.Join(t.TempDir(), "cache")
	out := filepath.Join(t.TempDir(), "out")
	opt := buildOptions(t, s, cache)
	opt.OutDir = out
	if _, err := Build(context.Background(), r, opt); err != nil { // fill the cache
		t.Fatal(err)
	}
	for _, wait := range []bool{false, true} {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := opt
				o.Force, o.Wait = true, wait
				_, errs[i] = Build(context.Background(), r, o)
			}()
		}
		wg.Wait()
		busy := 0
		for _, err := range errs {
			switch {
			case err == nil:
			case errors.Is(err, outdir.ErrBusy) && strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) && strings.Contains(err.Error(), "--wait"):
				busy++
			default:
				t.Errorf("concurrent Build (wait %v) = %v", wait, err)
			}
		}
		if wait && busy != 0 || !wait && busy > 1 {
			t.Errorf("wait %v: %d builds were refused as busy: %v", wait, busy, errs)
		}
		buildtest.CheckInvariant(t, out)
		tokens := map[string]bool{}
		for _, host := range []string{"srv", "agent"} {
			tokens[tokenIn(t, filepath.Join(out, host+".img"))] = true
		}
		if len(tokens) != 1 {
			t.Errorf("the nodes carry %d different tokens; want one", len(tokens))
		}
	}
}

// tokenIn reads the token from an image's k3s config.
func tokenIn(t *testing.T, img string) string {
	t.Helper()
	cfg := buildtest.ReadBootFile(t, img, "pibake/k3s-config.yaml")
	for _, line := range strings.Split(cfg, "\n") {
		if v, ok := strings.CutPrefix(line, "token: "); ok {
			return v
		}
	}
	t.Fatalf("%s: no token in the k3s config", img)
	return ""
}

// TestRebuildKeepsOneConsistentSet changes the recipe between builds:
// a stale .img.xz goes, a node that fails keeps its last image (listed,
// outdated), a removed node stays until --prune, and an interrupt after
// a recipe change leaves SHA256SUMS true.
func TestRebuildKeepsOneConsistentSet(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	cache := filepath.Join(t.TempDir(), "cache")
	opt := buildOptions(t, s, cache)
	three := buildtest.TwoNodes + "node \"extra\" {\n  role = \"agent\"\n}\n"
	opt.Compress = true
	if _, err := Build(context.Background(), buildtest.LabRecipe(t, s, three), opt); err != nil {
		t.Fatal(err)
	}
	if m := buildtest.CheckInvariant(t, opt.OutDir); buildtest.States(m) != "agent=current extra=current srv=current" || m.Node("srv").XZ == "" {
		t.Fatalf("first build: %s", buildtest.States(m))
	}

	// Without --compress the .img.xz would no longer match: it goes.
	opt.Compress = false
	res, err := Build(context.Background(), buildtest.LabRecipe(t, s, three), opt)
	if err != nil || res[0].Status != StatusUnchanged {
		t.Fatalf("rebuild without --compress = %+v, %v", res, err)
	}
	if xz, _ := filepath.Glob(filepath.Join(opt.OutDir, "*.xz")); len(xz) != 0 {
		t.Errorf("stale .img.xz left: %v", xz)
	}
	buildtest.CheckInvariant(t, opt.OutDir)

	// The recipe changes: agent cannot be built now (cloud-init on a base
	// without it), extra is gone from the recipe.
	changed := strings.Replace(buildtest.TwoNodes, "role = \"agent\"\n", "role = \"agent\"\n  labels = { zone = \"b\" }\n  firstboot {\n    method = \"cloud-init\"\n  }\n", 1)
	res, err = Build(context.Background(), buildtest.LabRecipe(t, s, changed), opt)
	if !errors.Is(err, ErrNodesFailed) {
		t.Fatalf("Build with a failing node = %v", err)
	}
	byHost := map[string]NodeResult{}
	for _, r := range res {
		byHost[r.Hostname] = r
	}
	if byHost["agent"].Status != StatusFailed || byHost["extra"].Status != StatusOrphan || byHost["srv"].Status != StatusUnchanged {
		t.Errorf("results = %+v", res)
	}
	m := buildtest.CheckInvariant(t, opt.OutDir)
	if buildtest.States(m) != "agent=outdated extra=orphan srv=current" || !files.Exists(filepath.Join(opt.OutDir, "agent.img")) || !files.Exists(filepath.Join(opt.OutDir, "extra.img")) {
		t.Errorf("after a failed node and a removed one: %s", buildtest.States(m))
	}

	// --prune deletes the removed node, unlisting it first.
	opt.Prune = true
	res, err = Build(context.Background(), buildtest.LabRecipe(t, s, buildtest.TwoNodes), opt)
	if err != nil || res[len(res)-1].Status != StatusPruned {
		t.Fatalf("Build --prune = %+v, %v", res, err)
	}
	if m := buildtest.CheckInvariant(t, opt.OutDir); buildtest.States(m) != "agent=current srv=current" || files.Exists(filepath.Join(opt.OutDir, "extra.img")) || files.Exists(filepath.Join(opt.OutDir, "extra.img.bmap")) {
		t.Errorf("after --prune: %s", buildtest.States(m))
	}

	// Ctrl-C after a recipe change, once the first node is published:
	// SHA256SUMS names the true sums and the rest are marked outdated.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	iopt := opt
	iopt.Jobs = 1
	iopt.Event = func(_ string, stage NodeStage) {
		if stage == StagePublished {
			cancel()
		}
	}
	relabelled := strings.ReplaceAll(buildtest.TwoNodes, "role = \"agent\"\n", "role = \"agent\"\n  labels = { zone = \"c\" }\n")
	relabelled = strings.ReplaceAll(relabelled, "ip   = \"192.168.7.10/24\"\n", "ip   = \"192.168.7.10/24\"\n  labels = { zone = \"c\" }\n")
	if _, err := Build(ctx, buildtest.LabRecipe(t, s, relabelled), iopt); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Build = %v", err)
	}
	if m := buildtest.CheckInvariant(t, opt.OutDir); strings.Count(buildtest.States(m), "current") != 1 || strings.Count(buildtest.States(m), "outdated") != 1 {
		t.Errorf("after an interrupt with one node rebuilt: %s", buildtest.States(m))
	}
}

// TestReadOnlyOutput: a build with nothing to change writes nothing, so
// it succeeds in a directory that cannot be written; one that must write
// fails with the reason and leaves the set as it was.
func TestReadOnlyOutput(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	r := buildtest.LabRecipe(t, s, buildtest.TwoNodes)
	if _, err := Build(context.Background(), r, opt); err != nil {
		t.Fatal(err)
	}
	readOnly(t, opt.OutDir)
	res, err := Build(context.Background(), r, opt)
	if err != nil || res[0].Status != StatusUnchanged || res[1].Status != StatusUnchanged {
		t.Fatalf("unchanged rebuild in a read-only directory = %+v, %v", res, err)
	}
	opt.Force = true
	if _, err := Build(context.Background(), r, opt); err == nil || !strings.Contains(err.Error(), "read-only file system") {
		t.Errorf("forced rebuild in a read-only directory = %v; want a read-only error", err)
	}
	buildtest.CheckInvariant(t, opt.OutDir)
}

// readOnly makes dir read-only for this process: a read-only bind mount as
// root (root writes through modes), else its mode.
func readOnly(t *testing.T, dir string) {
	t.Helper()
	if os.Getuid() != 0 {
		os.Chmod(dir, 0o555)
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
		return
	}
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("read-only remount: %v", err)
	}
}

// TestDiskFull builds into a tmpfs too small for the images: the build
// says which disk is full, nothing half-written stays, and with room again
// the next build completes the set.
func TestDiskFull(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the disk-full test mounts a tmpfs and needs root")
		}
		t.Skip("the disk-full test mounts a tmpfs and needs root")
	}
	s := buildtest.NewReleaseServer(t)
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	r := buildtest.LabRecipe(t, s, buildtest.TwoNodes)
	dir := t.TempDir()
	opt.OutDir = filepath.Join(dir, "out")
	// The disk fills while the first nodes' boot partitions are written
	// (2m), then when one node fits but not the second (3m); each time
	// the set stays consistent.
	for _, size := range []string{"2m", "3m"} {
		flags := uintptr(0)
		if size != "2m" {
			flags = syscall.MS_REMOUNT
		}
		if err := syscall.Mount("tmpfs", dir, "tmpfs", flags, "size="+size); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		if size == "2m" {
			t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
		}
		res, err := Build(context.Background(), r, opt)
		full := 0
		for _, r := range res {
			if errors.Is(r.Err, syscall.ENOSPC) && strings.Contains(r.Err.Error(), "is full") {
				full++
			}
		}
		if err == nil || full == 0 || !strings.Contains(err.Error(), "is full; free space or choose another --out") {
			t.Errorf("Build on a %s disk = %+v, %v; want ENOSPC and which disk is full", size, res, err)
		}
		buildtest.CheckInvariant(t, opt.OutDir)
	}
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatalf("grow tmpfs: %v", err)
	}
	if _, err := Build(context.Background(), r, opt); err != nil {
		t.Fatalf("Build with room again: %v", err)
	}
	if m := buildtest.CheckInvariant(t, opt.OutDir); buildtest.States(m) != "agent=current srv=current" {
		t.Errorf("after the disk had room again: %s", buildtest.States(m))
	}
}
