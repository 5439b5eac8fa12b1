package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/testimage"
)

// TestMain lets the kill test run this test binary as pibake itself.
func TestMain(m *testing.M) {
	if os.Getenv("PIBAKE_TEST_AS_PIBAKE") == "1" {
		main()
		return
	}
	code := m.Run()
	testimage.Cleanup()
	os.Exit(code)
}

// TestKillAtRandomInstants kills `pibake build` with SIGKILL, over and
// over, each time after a recipe change so that nodes are being
// published. Two kills in three are aimed (aimKill): a moment after a
// node's "done in" line, or after a publication's journal appears, the
// instants the journal exists for and that a kill at a random instant
// seldom hits (most land before the first publication); the others fall
// at random instants over the build. After each kill the output
// directory holds no listed file that is missing or has another checksum
// (sha256sum -c passes), and the next build, run to the end, leaves the
// whole set consistent: every image listed, nothing under a temporary
// name. The real-kill counterpart of builder's TestCrashPoints, which
// stops a build after each filesystem step in turn; a small image keeps
// each of its runs cheap.
func TestKillAtRandomInstants(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and rebuilds 10 times")
	}
	testimage.Tool(t, "sha256sum")
	base := filepath.Join(t.TempDir(), "base.img")
	if err := testimage.Build(base, buildtest.Small()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	cache := filepath.Join(dir, "cache")
	recipe := filepath.Join(dir, "lab.hcl")
	writeRecipe := func(zone int) {
		src := fmt.Sprintf(`image {
  source = %q
}
defaults {
  labels = { zone = "z%d" }
}
node "srv" {
  role = "server"
  ip   = "192.168.7.10/24"
}
node "agent" {
  role  = "agent"
  count = 2
}
`, base, zone)
		if err := os.WriteFile(recipe, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pibake := func(args ...string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], append([]string{"build", "--out", out, "--cache", cache, "--jobs", "2"}, args...)...)
		cmd.Env = append(os.Environ(), "PIBAKE_TEST_AS_PIBAKE=1")
		return cmd
	}
	// How long a rebuild of every node takes here, once the cache is
	// warm: the kills fall inside it.
	var span time.Duration
	for zone := 0; zone < 2; zone++ {
		writeRecipe(zone)
		start := time.Now()
		if out, err := pibake(recipe).CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
		span = time.Since(start)
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	outcomes := map[string]int{}
	// 10 runs, and more (up to 20) until one kill has fallen between two
	// nodes' publications or in one, the instants the journal exists for.
	const minRuns, maxRuns = 10, 20
	between, runs := 0, 0
	for i := 2; runs < minRuns || (between == 0 && runs < maxRuns); i++ {
		runs++
		writeRecipe(i)
		journal := filepath.Join(out, ".pibake", "publishing-*.json")
		aim := aimKill(runs, rng, span, journal)
		log, err := aim.run(t, pibake(recipe))
		published := strings.Count(log, ": done in ")
		inJournal, _ := filepath.Glob(journal)
		outcome := fmt.Sprintf("killed with %d of 3 nodes published", published)
		switch {
		case err == nil:
			outcome = "finished before the kill"
		case len(inJournal) > 0:
			outcome += ", one in the middle of its publication"
			between++
		case published > 0 && published < 3:
			between++
		}
		outcomes[outcome]++
		if err := checkSums(out); err != nil {
			t.Errorf("run %d (%s, %s): right after the kill: %v", i, outcome, aim, err)
		}
		var rebuild bytes.Buffer
		cmd := pibake(recipe)
		cmd.Stderr = &rebuild
		if err := cmd.Run(); err != nil {
			t.Fatalf("run %d: the build after the kill failed: %v\n%s", i, err, rebuild.String())
		}
		checkSet(t, out)
		if t.Failed() {
			t.Fatalf("run %d (%s): after the next build:\n%s", i, outcome, rebuild.String())
		}
	}
	for o, n := range outcomes {
		t.Logf("%d of %d runs: %s", n, runs, o)
	}
	if between == 0 {
		t.Errorf("no kill in %d runs fell between two publications or in one: the test did not try what it is for", runs)
	}
}

// killAt is when a run is killed: once done nodes have said "done in",
// or once a file matching journal exists (neither: from the start), and
// then after a pause.
type killAt struct {
	done    int
	journal string
	after   time.Duration
}

// aimKill picks run's kill instant, a different one each time, in turn:
//   - a moment after the first or second node's "done in", while the
//     next node (--jobs 2) is publishing or about to;
//   - as soon as a publication's journal is seen (polled every
//     millisecond, killed within one more), in the middle of its renames
//     and listings when the kill is quick enough: on tmpfs a publication
//     takes about a millisecond, so some of these land just after it;
//   - a random instant over the whole build, which mostly falls before
//     any publication, while images are copied and written.
func aimKill(run int, rng *rand.Rand, span time.Duration, journal string) killAt {
	switch run % 3 {
	case 1:
		return killAt{done: run/3%2 + 1, after: time.Duration(rng.Int63n(int64(span) / 12))}
	case 2:
		return killAt{journal: journal, after: time.Duration(rng.Int63n(int64(time.Millisecond)))}
	}
	return killAt{after: time.Duration(rng.Int63n(int64(span)))}
}

func (k killAt) String() string {
	switch {
	case k.done > 0:
		return fmt.Sprintf("killed %s after \"done in\" number %d", k.after.Round(time.Millisecond), k.done)
	case k.journal != "":
		return fmt.Sprintf("killed %s after a journal appeared", k.after.Round(time.Millisecond))
	}
	return fmt.Sprintf("killed %s after the start", k.after.Round(time.Millisecond))
}

// wait returns once k's event has happened, or the run has ended (eof).
func (k killAt) wait(reached, eof chan struct{}) {
	switch {
	case k.done > 0:
		select {
		case <-reached:
		case <-eof: // finished (or failed) before the k-th node
		}
	case k.journal != "":
		for {
			select {
			case <-eof:
				return
			default:
			}
			if m, _ := filepath.Glob(k.journal); len(m) > 0 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// run starts cmd, kills it with SIGKILL at k and returns its stderr and
// how it ended (nil: it finished before the kill).
func (k killAt) run(t *testing.T, cmd *exec.Cmd) (string, error) {
	t.Helper()
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	reached, eof := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(eof)
		sc := bufio.NewScanner(pipe)
		for done := 0; sc.Scan(); {
			log.Write(append(sc.Bytes(), '\n'))
			if strings.Contains(sc.Text(), ": done in ") {
				if done++; done == k.done {
					close(reached)
				}
			}
		}
	}()
	k.wait(reached, eof)
	time.Sleep(k.after)
	cmd.Process.Signal(syscall.SIGKILL)
	<-eof
	return log.String(), cmd.Wait()
}

// checkSums: every file SHA256SUMS lists exists with that checksum.
func checkSums(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "SHA256SUMS")); err != nil {
		return nil // killed before the first listing: nothing claims anything
	}
	cmd := exec.Command("sha256sum", "--strict", "--quiet", "-c", "SHA256SUMS")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sha256sum -c SHA256SUMS: %v\n%s", err, out)
	}
	return nil
}

// checkSet: the output directory's invariant (buildtest.CheckInvariant)
// holds, with all three nodes listed.
func checkSet(t *testing.T, dir string) {
	t.Helper()
	if m := buildtest.CheckInvariant(t, dir); len(m.Nodes) != 3 {
		t.Errorf("manifest.json lists %d nodes; want 3", len(m.Nodes))
	}
}
