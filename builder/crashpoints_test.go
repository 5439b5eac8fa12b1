package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/builder/inputs"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/builder/outdir/seam"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/recipes"
)

// crashScenario is a change to an output directory: from a start state
// (made once), a run that the test stops after every filesystem step in
// turn.
type crashScenario struct {
	name string
	// start makes the start state in dir.
	start func(t *testing.T, dir string)
	// run makes the change in dir, its steps going through fs.
	run func(dir string, fs seam.FS) error
	// allowed, when set, is the allowed_signers file of the key the
	// scenario signs with: put beside the output directory, where
	// buildtest.CheckInvariant verifies every signature with ssh-keygen.
	allowed string
}

// TestCrashPoints is the transaction's crash-point enumeration with real
// builds: for each scenario (a new node; a changed node; byte-identical
// images with --compress newly asked; --force; a node removed with
// --prune; a merge; signed builds and merges), it takes every filesystem
// step of the change and, for every k, the directory as a kill -9 after
// step k leaves it (buildtest.CrashFS's BeforeStep), opens it as the next
// run does (which rolls the journal forward and sweeps), checks the
// invariant (sha256sum -c passes, every image listed or gone, no
// temporary name), runs the change again to the end and requires the
// directory to be byte for byte what the uninterrupted change made. The
// crash points of a scenario are checked in parallel. -short tries every
// fifth step.
func TestCrashPoints(t *testing.T) {
	s := buildtest.NewReleaseServerFor(t, buildtest.Small())
	cache := filepath.Join(memDir(t), "cache")
	recipe := func(t *testing.T, nodes string) *recipes.Recipe {
		return buildtest.Recipe(t, fmt.Sprintf("image {\n  source = %q\n}\ncluster {\n  name  = \"lab\"\n  token = %q\n}\n%s", s.URL+"/latest", buildtest.Token, nodes))
	}
	const srv = "node \"srv\" {\n  role = \"server\"\n  ip   = \"192.168.7.10/24\"\n}\n"
	const agent = "node \"agent\" {\n  role = \"agent\"\n}\n"
	const extra = "node \"extra\" {\n  role = \"agent\"\n}\n"
	relabelled := strings.Replace(agent, "role = \"agent\"\n", "role = \"agent\"\n  labels = { zone = \"b\" }\n", 1)
	two, three, one := recipe(t, srv+agent), recipe(t, srv+agent+extra), recipe(t, srv)
	changed := recipe(t, srv+relabelled)
	build := func(r *recipes.Recipe, dir string, fs seam.FS, change func(*Options)) error {
		opt := Options{OutDir: dir, Jobs: 1, Version: "test", Base: s.BaseOptions(cache), OutFS: fs}
		if change != nil {
			change(&opt)
		}
		_, err := Build(context.Background(), r, opt)
		return err
	}
	builtWith := func(r *recipes.Recipe) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			if err := build(r, dir, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	key, allowed := buildtest.SigningKey(t, t.TempDir())
	signed := func(r *recipes.Recipe) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			if err := build(r, dir, nil, func(o *Options) { o.SignKey = key }); err != nil {
				t.Fatal(err)
			}
		}
	}
	scenarios := []crashScenario{
		{"new node", builtWith(one), func(dir string, fs seam.FS) error { return build(two, dir, fs, nil) }, ""},
		{"changed node", builtWith(two), func(dir string, fs seam.FS) error { return build(changed, dir, fs, nil) }, ""},
		{"identical bytes, --compress newly asked", builtWith(two), func(dir string, fs seam.FS) error {
			return build(two, dir, fs, func(o *Options) { o.Compress, o.Nodes = true, []string{"agent"} })
		}, ""},
		{"--force", builtWith(two), func(dir string, fs seam.FS) error {
			return build(two, dir, fs, func(o *Options) { o.Force, o.Nodes = true, []string{"agent"} })
		}, ""},
		{"--prune", builtWith(three), func(dir string, fs seam.FS) error {
			return build(two, dir, fs, func(o *Options) { o.Prune = true })
		}, ""},
		{"merge", shardsOf(two, build), func(dir string, fs seam.FS) error {
			return fleet.Merge(context.Background(), filepath.Join(dir, "merged"), []string{filepath.Join(dir, "s1"), filepath.Join(dir, "s2")}, fleet.MergeOptions{FS: fs})
		}, ""},
		{"signed, changed node, signed again", signed(two), func(dir string, fs seam.FS) error {
			return build(changed, dir, fs, func(o *Options) { o.SignKey = key })
		}, allowed},
		{"merge --sign-key", shardsOf(two, build), func(dir string, fs seam.FS) error {
			return fleet.Merge(context.Background(), filepath.Join(dir, "merged"), []string{filepath.Join(dir, "s1"), filepath.Join(dir, "s2")}, fleet.MergeOptions{FS: fs, SignKey: key})
		}, allowed},
	}
	counts := map[string]int{}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			counts[sc.name] = crashEveryStep(t, sc)
		})
	}
	for _, sc := range scenarios {
		t.Logf("%-40s %d crash points", sc.name+":", counts[sc.name])
	}
}

// shardsOf makes a merge's start state: an init directory's two copies,
// each with its shard of r built, in dir/s1 and dir/s2.
func shardsOf(r *recipes.Recipe, build func(*recipes.Recipe, string, seam.FS, func(*Options)) error) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		initDir := filepath.Join(dir, "init")
		if err := fleet.Init(context.Background(), r, fleet.InitOptions{Options: inputs.Options{OutDir: initDir, Version: "test"}}); err != nil {
			t.Fatal(err)
		}
		for i, name := range []string{"s1", "s2"} {
			buildtest.Copy(t, initDir, filepath.Join(dir, name))
			if err := build(r, filepath.Join(dir, name), nil, func(o *Options) { o.Shard = fleet.Shard{Index: i + 1, Count: 2} }); err != nil {
				t.Fatal(err)
			}
		}
		os.RemoveAll(initDir)
	}
}

// crashEveryStep runs a scenario once, uninterrupted, copying its
// directory before every filesystem step: the copy made before step k+1
// is what a kill -9 after step k leaves (the page cache keeps what was
// written; nothing of the run's own error handling happens). Each copy is
// then checked in a parallel subtest: the next run opens it (rolling the
// journal forward, sweeping), the invariant holds, and run to the end the
// change makes what the uninterrupted one made. It returns how many
// steps the change has.
func crashEveryStep(t *testing.T, sc crashScenario) int {
	start := filepath.Join(memDir(t), "start")
	sc.start(t, start)
	stride := 1
	if testing.Short() {
		stride = 5
	}
	want, steps, stateOf := runCopyingStates(t, sc, start, stride)
	wantFiles := buildtest.Snapshot(t, want)
	// The change's end state keeps the invariant; a copy that converges
	// is byte for byte the same.
	buildtest.CheckInvariant(t, outDirOf(want))
	// The next run opens each crash state (the journal rolls forward,
	// temporary names are swept). Crash states that are the same after
	// that (most differ only in a temporary file's bytes) are one check:
	// what follows depends on nothing but the directory's contents.
	opened := map[string]int{}
	for k := 0; k < len(steps); k += stride {
		dir := stateOf(k)
		sc.besideOut(t, dir)
		state, err := openState(t, dir)
		if err != nil {
			t.Fatalf("%s: open: %v", lastStep(steps, k), err)
		}
		key := stateKey(state)
		if first, ok := opened[key]; ok {
			t.Logf("%s: once opened, the same directory as %s", lastStep(steps, k), lastStep(steps, first))
			os.RemoveAll(filepath.Dir(dir))
			continue
		}
		opened[key] = k
		t.Run(fmt.Sprintf("crash %d of %d", k, len(steps)), func(t *testing.T) {
			t.Parallel()
			defer os.RemoveAll(filepath.Dir(dir))
			checkFailedStep(t, sc, start, k, steps, state)
			buildtest.CheckInvariant(t, outDirOf(dir))
			// And it converges: run to the end, it makes what the
			// uninterrupted change made.
			if err := sc.run(dir, nil); err != nil {
				t.Fatalf("%s: the next run: %v", lastStep(steps, k), err)
			}
			if got := buildtest.Snapshot(t, dir); !maps.Equal(got, wantFiles) {
				t.Errorf("%s: the next run made other files: %v", lastStep(steps, k), changed(wantFiles, got))
			}
		})
	}
	t.Logf("%d steps, %d crash states tried, %d different once opened", len(steps), (len(steps)+stride-1)/stride, len(opened))
	return len(steps)
}

// runCopyingStates runs the change uninterrupted from a copy of start,
// copying its directory before every stride-th filesystem step, and
// returns the directory it made, its steps, and where the copy made
// before step k+1 (a kill after step k) is.
func runCopyingStates(t *testing.T, sc crashScenario, start string, stride int) (string, []string, func(int) string) {
	// The same base name as the copies: steps name it.
	want := filepath.Join(memDir(t), "out")
	buildtest.Copy(t, start, want)
	sc.besideOut(t, want)
	states := memDir(t)
	stateOf := func(k int) string { return filepath.Join(states, fmt.Sprintf("%04d", k), "out") }
	run := buildtest.NewCrashFS(-1)
	var copyErr error
	run.BeforeStep = func(done int) {
		if done%stride == 0 && copyErr == nil {
			copyErr = copyState(want, stateOf(done))
		}
	}
	if err := sc.run(want, run); err != nil || copyErr != nil {
		t.Fatalf("uninterrupted: %v (copying the crash states: %v)", err, copyErr)
	}
	steps := run.Steps()
	if len(steps) == 0 {
		t.Fatal("the change took no filesystem step")
	}
	return want, steps, stateOf
}

// besideOut puts the scenario's allowed_signers beside the output
// directory: in out's parent, and in out for a merge's out/merged (a
// file CheckInvariant and the snapshots ignore).
func (sc crashScenario) besideOut(t *testing.T, out string) {
	if sc.allowed != "" {
		buildtest.Copy(t, sc.allowed, filepath.Join(filepath.Dir(out), "allowed_signers"))
		buildtest.Copy(t, sc.allowed, filepath.Join(out, "allowed_signers"))
	}
}

// openState opens a crash state's output directory as the next run does
// and returns what the directory then holds.
func openState(t *testing.T, dir string) (map[string]string, error) {
	d, err := outdir.Open(context.Background(), outDirOf(dir), outdir.Options{})
	if err != nil {
		return nil, err
	}
	d.Close()
	return dirState(t, dir), nil
}

// checkFailedStep runs the change from the start state with step k+1
// and every later one failing, so that the run's own error handling runs
// (a kill leaves none): it must take the uninterrupted run's first k
// steps and, once opened, leave the directory a kill after step k leaves
// (want) — an error path changes nothing but through the seam.
func checkFailedStep(t *testing.T, sc crashScenario, start string, k int, steps []string, want map[string]string) {
	dir := filepath.Join(memDir(t), "out")
	buildtest.Copy(t, start, dir)
	sc.besideOut(t, dir)
	crash := buildtest.NewCrashFS(k)
	sc.run(dir, crash)
	if got := crash.Steps(); len(got) <= k || !slices.Equal(got[:k], steps[:k]) {
		t.Fatalf("step %d failing: the run took other steps than the uninterrupted one:\n%s\nwant\n%s", k+1, strings.Join(got, ", "), strings.Join(steps, ", "))
	}
	got, err := openState(t, dir)
	if err != nil {
		t.Fatalf("step %d failing: open: %v", k+1, err)
	}
	if !maps.Equal(got, want) {
		t.Errorf("%s, the next step failing: once opened, another directory than a kill there leaves: %v", lastStep(steps, k), changed(want, got))
	}
}

// dirState is what a directory holds, for telling crash states apart:
// every file's bytes (buildtest.Snapshot) by its path, and every file's
// and directory's mode.
func dirState(t *testing.T, dir string) map[string]string {
	state := buildtest.Snapshot(t, dir)
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		state["mode of "+strings.TrimPrefix(p, dir)] = fi.Mode().String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return state
}

// stateKey is a directory state as one comparable string.
func stateKey(state map[string]string) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(state)) {
		fmt.Fprintf(&b, "%s %s\n", name, state[name])
	}
	return b.String()
}

// copyState copies the directory from to to, as a killed run left it.
// Raspberry Pi Imager's os_list.json names its directory by absolute
// path: in the copy it names the copy, as the directory's own would. It
// runs inside the build (CrashFS.BeforeStep), so it returns its error.
func copyState(from, to string) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", "--sparse=always", from, to).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a %s %s: %v\n%s", from, to, err, out)
	}
	absFrom, _ := filepath.Abs(from)
	absTo, _ := filepath.Abs(to)
	return filepath.WalkDir(to, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != outdir.OSListFile {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(p, bytes.ReplaceAll(b, []byte(absFrom), []byte(absTo)), 0o644)
	})
}

// memDir is a new directory in memory (tmpfs) where there is one, else
// on disk: the crash points are about which steps happened, not about
// the disk, and each of their hundreds of runs syncs its images (the real
// disk has TestKillAtRandomInstants).
func memDir(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "pibake-crashpoints-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// outDirOf is the output directory a scenario changes in dir: dir, or
// the merged directory.
func outDirOf(dir string) string {
	if m := filepath.Join(dir, "merged"); dirExists(m) {
		return m
	}
	return dir
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func lastStep(steps []string, k int) string {
	if k == 0 {
		return "before any"
	}
	return "after " + steps[k-1]
}

// TestEmptySetsCheck: the directories that hold no node — pibake init's,
// a first build interrupted before its first node was published, a merge
// --allow-partial of shards that built nothing — hold no SHA256SUMS (an empty one fails
// sha256sum -c: "no properly formatted checksum lines found") and a
// manifest.json whose nodes are [], and keep the invariant.
func TestEmptySetsCheck(t *testing.T) {
	s := buildtest.NewReleaseServerFor(t, buildtest.Small())
	r := buildtest.LabRecipe(t, s, buildtest.TwoNodes)
	cache := filepath.Join(t.TempDir(), "cache")
	root := t.TempDir()
	dir := func(name string) string { return filepath.Join(root, name) }
	empty := func(what, d string) {
		t.Helper()
		if m := buildtest.CheckInvariant(t, d); len(m.Nodes) != 0 {
			t.Errorf("%s: %d nodes listed; want none", what, len(m.Nodes))
		}
		b, err := os.ReadFile(filepath.Join(d, "manifest.json"))
		if err != nil || !strings.Contains(string(b), `"nodes": []`) {
			t.Errorf("%s: manifest.json %v:\n%s", what, err, b)
		}
	}

	if err := fleet.Init(context.Background(), r, fleet.InitOptions{Options: inputs.Options{OutDir: dir("init"), Version: "test"}}); err != nil {
		t.Fatal(err)
	}
	empty("pibake init", dir("init"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opt := Options{OutDir: dir("interrupted"), Jobs: 1, Version: "test", Base: s.BaseOptions(cache),
		Event: func(_ string, stage NodeStage) {
			if stage == StageWritten {
				cancel() // the first node's image is written, not yet published
			}
		}}
	if _, err := Build(ctx, r, opt); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted first build: %v", err)
	}
	empty("a first build interrupted before its first node", dir("interrupted"))

	for _, shard := range []string{"s1", "s2"} {
		buildtest.Copy(t, dir("init"), dir(shard))
	}
	// Shards that built nothing are no fleet: refused, unless
	// --allow-partial.
	if err := fleet.Merge(context.Background(), dir("merged"), []string{dir("s1"), dir("s2")}, fleet.MergeOptions{}); !errors.Is(err, fleet.ErrIncomplete) {
		t.Errorf("a merge of shards without nodes: %v", err)
	}
	if err := fleet.Merge(context.Background(), dir("merged"), []string{dir("s1"), dir("s2")}, fleet.MergeOptions{AllowPartial: true}); err != nil {
		t.Fatal(err)
	}
	empty("a merge --allow-partial of shards without nodes", dir("merged"))
}
