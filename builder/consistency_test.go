package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/recipes"
)

// The output directory's invariant (outdir.go): every image under a final
// name is complete and listed in SHA256SUMS and manifest.json with its
// true checksum; `sha256sum -c SHA256SUMS` passes; no .part survives the
// next build; .img, .bmap and .xz are one unit.

// labRecipe writes a recipe built from s's image, with no token (the build
// generates one), and the given node blocks.
func labRecipe(t *testing.T, s *releaseServer, nodes string) *recipes.Recipe {
	t.Helper()
	src := fmt.Sprintf("image {\n  source = %q\n}\ncluster {\n  name = \"lab\"\n}\n%s", s.URL+"/latest", nodes)
	path := filepath.Join(t.TempDir(), "lab.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	r, diags := recipes.Load(hclparse.NewParser(), path)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return r
}

const twoNodes = `
node "srv" {
  role = "server"
  ip   = "192.168.7.10/24"
}
node "agent" {
  role = "agent"
}
`

// checkInvariant checks the output directory's invariant with the real
// sha256sum and against the files themselves, and returns the manifest.
func checkInvariant(t *testing.T, dir string) manifest {
	t.Helper()
	if left, _ := filepath.Glob(filepath.Join(dir, "*.part")); len(left) != 0 {
		t.Errorf("left under temporary names: %v", left)
	}
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatalf("SHA256SUMS: %v", err)
	}
	if len(sums) > 0 {
		cmd := exec.Command("sha256sum", "--strict", "-c", "SHA256SUMS")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c SHA256SUMS: %v\n%s", err, out)
		}
	}
	m := readManifest(dir)
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			listed[f[1]] = true
		}
	}
	for _, n := range m.Nodes {
		if !listed[n.File] || (n.XZ != "") != listed[n.XZ] || !files.Exists(filepath.Join(dir, n.Bmap)) {
			t.Errorf("manifest entry %s (%s, xz %q) does not match SHA256SUMS or lacks its .bmap:\n%s", n.Hostname, n.File, n.XZ, sums)
		}
		if n.State == "" {
			t.Errorf("manifest entry %s has no state", n.Hostname)
		}
	}
	for _, pattern := range []string{"*.img", "*.img.xz"} {
		files, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, f := range files {
			if !listed[filepath.Base(f)] {
				t.Errorf("%s is under a final name but not in SHA256SUMS", filepath.Base(f))
			}
		}
	}
	return m
}

func states(m manifest) string {
	var s []string
	for _, n := range m.Nodes {
		s = append(s, n.Hostname+"="+n.State)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// TestConcurrentBuilds runs two builds into one directory at once: the
// second fails at once naming the first's pid, or with Wait queues behind
// it; either way every node carries the one token and the set is whole.
func TestConcurrentBuilds(t *testing.T) {
	s := newReleaseServer(t)
	r := labRecipe(t, s, twoNodes)
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
			case errors.Is(err, ErrOutputBusy) && strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) && strings.Contains(err.Error(), "--wait"):
				busy++
			default:
				t.Errorf("concurrent Build (wait %v) = %v", wait, err)
			}
		}
		if wait && busy != 0 || !wait && busy > 1 {
			t.Errorf("wait %v: %d builds were refused as busy: %v", wait, busy, errs)
		}
		checkInvariant(t, out)
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
	cfg := readBootFile(t, img, "pibake/k3s-config.yaml")
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
	s := newReleaseServer(t)
	cache := filepath.Join(t.TempDir(), "cache")
	opt := buildOptions(t, s, cache)
	three := twoNodes + "node \"extra\" {\n  role = \"agent\"\n}\n"
	opt.Compress = true
	if _, err := Build(context.Background(), labRecipe(t, s, three), opt); err != nil {
		t.Fatal(err)
	}
	if m := checkInvariant(t, opt.OutDir); states(m) != "agent=current extra=current srv=current" || m.find("srv").XZ == "" {
		t.Fatalf("first build: %s", states(m))
	}

	// Without --compress the .img.xz would no longer match: it goes.
	opt.Compress = false
	res, err := Build(context.Background(), labRecipe(t, s, three), opt)
	if err != nil || res[0].Status != StatusUnchanged {
		t.Fatalf("rebuild without --compress = %+v, %v", res, err)
	}
	if xz, _ := filepath.Glob(filepath.Join(opt.OutDir, "*.xz")); len(xz) != 0 {
		t.Errorf("stale .img.xz left: %v", xz)
	}
	checkInvariant(t, opt.OutDir)

	// The recipe changes: agent cannot be built now (cloud-init on a base
	// without it), extra is gone from the recipe.
	changed := strings.Replace(twoNodes, "role = \"agent\"\n", "role = \"agent\"\n  labels = { zone = \"b\" }\n  firstboot {\n    method = \"cloud-init\"\n  }\n", 1)
	res, err = Build(context.Background(), labRecipe(t, s, changed), opt)
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
	m := checkInvariant(t, opt.OutDir)
	if states(m) != "agent=outdated extra=orphan srv=current" || !files.Exists(filepath.Join(opt.OutDir, "agent.img")) || !files.Exists(filepath.Join(opt.OutDir, "extra.img")) {
		t.Errorf("after a failed node and a removed one: %s", states(m))
	}

	// --prune deletes the removed node, unlisting it first.
	opt.Prune = true
	res, err = Build(context.Background(), labRecipe(t, s, twoNodes), opt)
	if err != nil || res[len(res)-1].Status != StatusPruned {
		t.Fatalf("Build --prune = %+v, %v", res, err)
	}
	if m := checkInvariant(t, opt.OutDir); states(m) != "agent=current srv=current" || files.Exists(filepath.Join(opt.OutDir, "extra.img")) || files.Exists(filepath.Join(opt.OutDir, "extra.img.bmap")) {
		t.Errorf("after --prune: %s", states(m))
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
	relabelled := strings.ReplaceAll(twoNodes, "role = \"agent\"\n", "role = \"agent\"\n  labels = { zone = \"c\" }\n")
	relabelled = strings.ReplaceAll(relabelled, "ip   = \"192.168.7.10/24\"\n", "ip   = \"192.168.7.10/24\"\n  labels = { zone = \"c\" }\n")
	if _, err := Build(ctx, labRecipe(t, s, relabelled), iopt); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Build = %v", err)
	}
	if m := checkInvariant(t, opt.OutDir); strings.Count(states(m), "current") != 1 || strings.Count(states(m), "outdated") != 1 {
		t.Errorf("after an interrupt with one node rebuilt: %s", states(m))
	}
}

// TestRecoverFromKill recreates what a build killed in the middle of
// publishing a node leaves, at every step, and opens the directory as the
// next build does: the node is either published whole or not listed and
// gone, and the set is consistent.
func TestRecoverFromKill(t *testing.T) {
	s := newReleaseServer(t)
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	opt.Compress = true
	r := labRecipe(t, s, twoNodes)
	if _, err := Build(context.Background(), r, opt); err != nil {
		t.Fatal(err)
	}
	master := opt.OutDir
	// The publication steps, as publish does them; killed after step k.
	steps := []string{"journal", "unlist", "remove-old", "rename-xz", "rename-bmap", "rename-img", "list"}
	for k := range steps {
		t.Run("killed after "+steps[k], func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			if out, err := exec.Command("cp", "-a", "--sparse=always", master, dir).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v\n%s", err, out)
			}
			o := &output{dir: dir, logf: t.Logf, m: readManifest(dir)}
			old := *o.m.find("agent")
			// The new version of agent: other bytes, so its checksums differ.
			pub := publication{Entry: old, Parts: map[string]part{}}
			for _, name := range []string{"agent.img", "agent.img.bmap", "agent.img.xz"} {
				data := []byte("new " + name)
				os.WriteFile(filepath.Join(dir, name+".part"), data, 0o600)
				pub.Parts[name] = part{Temp: name + ".part", SHA256: sumOf(data)}
			}
			pub.Entry.SHA256, pub.Entry.XZSHA256 = pub.Parts["agent.img"].SHA256, pub.Parts["agent.img.xz"].SHA256
			for _, step := range steps[:k+1] {
				switch step {
				case "journal":
					b, _ := json.Marshal(pub)
					os.WriteFile(filepath.Join(dir, journalFile), b, 0o600)
				case "unlist":
					o.unlist("agent")
				case "remove-old":
					for _, name := range []string{"agent.img", "agent.img.bmap", "agent.img.xz"} {
						os.Remove(filepath.Join(dir, name))
					}
				case "rename-xz", "rename-bmap", "rename-img":
					name := map[string]string{"rename-xz": "agent.img.xz", "rename-bmap": "agent.img.bmap", "rename-img": "agent.img"}[step]
					os.Rename(filepath.Join(dir, name+".part"), filepath.Join(dir, name))
				case "list":
					o.m.set(pub.Entry)
					o.write()
				}
			}
			next, err := openOutput(context.Background(), dir, false, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			next.close()
			m := checkInvariant(t, dir)
			e := m.find("agent")
			published := k >= 5 // the image was renamed into place
			switch {
			case published && (e == nil || e.SHA256 != pub.Entry.SHA256):
				t.Errorf("the new agent.img was in place, but the manifest says %+v", e)
			case !published && k >= 1 && e != nil:
				t.Errorf("a half-published agent is listed: %+v", e)
			case k == 0 && (e == nil || e.SHA256 != old.SHA256):
				t.Errorf("killed before anything moved: agent should be as it was, is %+v", e)
			}
			if files.Exists(filepath.Join(dir, journalFile)) {
				t.Error("the journal survived the recovery")
			}
		})
	}
}

func sumOf(b []byte) string {
	f := filepath.Join(os.TempDir(), fmt.Sprintf("pibake-sum-%d", os.Getpid()))
	os.WriteFile(f, b, 0o600)
	defer os.Remove(f)
	sum, _, _ := files.SHA256(context.Background(), f)
	return sum
}

// TestReadOnlyOutput: a build with nothing to change writes nothing, so
// it succeeds in a directory that cannot be written; one that must write
// fails with the reason and leaves the set as it was.
func TestReadOnlyOutput(t *testing.T) {
	s := newReleaseServer(t)
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	r := labRecipe(t, s, twoNodes)
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
	checkInvariant(t, opt.OutDir)
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
	s := newReleaseServer(t)
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	r := labRecipe(t, s, twoNodes)
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
		checkInvariant(t, opt.OutDir)
	}
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatalf("grow tmpfs: %v", err)
	}
	if _, err := Build(context.Background(), r, opt); err != nil {
		t.Fatalf("Build with room again: %v", err)
	}
	if m := checkInvariant(t, opt.OutDir); states(m) != "agent=current srv=current" {
		t.Errorf("after the disk had room again: %s", states(m))
	}
}

// readBootFile reads a file from an image's boot partition.
func readBootFile(t *testing.T, img, name string) string {
	t.Helper()
	im, err := diskimg.Open(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	b, err := im.ReadBootFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
