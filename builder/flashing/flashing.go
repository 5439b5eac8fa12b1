// Package flashing writes nodes, or built images, to SD cards, SSDs and
// plain files, all at once and verified: the orchestration beside
// builder/flash, which writes one source to one target.
package flashing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pibake/pibake/builder/flash"
	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/builder/inputs"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/progress"
	"github.com/pibake/pibake/recipes"
)

// Options configure Flash and FlashImage.
type Options struct {
	// Options are the run's: the output directory (its token, CA and
	// node passwords are the ones flash writes, under its lock), the
	// cache, the base image, Jobs, Version, Logf and Progress.
	inputs.Options
	// Wait queues behind a build holding the output directory.
	Wait bool
	// Targets pair each target with the node written to it (Flash) or
	// just list them (FlashImage).
	Targets []Target
	// AllowFixed lets fixed (not removable, not USB) disks be written.
	AllowFixed bool
	// Confirm, when set, is shown the plan once every target has passed
	// the checks and before anything is written; an error stops the
	// flash with nothing written (a "no" at the prompt, --dry-run).
	Confirm func(size int64, targets []Target) error
}

// Target is one target and the node written to it.
type Target struct {
	Node   string
	Target flash.Target
}

// ErrTargetsFailed is returned (wrapped) when some targets failed; the
// others are written and verified.
var ErrTargetsFailed = errors.New("targets failed")

// ErrRefused is returned (wrapped) when a target must not be written;
// then nothing is written to any target.
var ErrRefused = errors.New("refused")

// Flash writes each target's node straight from the cached base image and
// the node's payload: no node image is written to disk, only the node's
// edited head (its partition table and boot partition, a few megabytes of
// data in a sparse part in the output directory, because the FAT editor
// works on a file), while the rest is read from the base. The payload,
// the edit and the mapped ranges come from the code build uses, so a
// flashed device holds byte for byte what `pibake build` writes to the
// node's .img; when the output directory lists that node built from the
// same inputs, its SHA-256 is checked too. The identity (token, CA, node
// passwords) is settled as build does, under the output directory's lock,
// which flash holds throughout: flash needs no earlier build. Each result
// is recorded in manifest.json.
func Flash(ctx context.Context, r *recipes.Recipe, opt Options) ([]flash.Result, error) {
	f, err := prepare(r, opt)
	if err != nil {
		return nil, err
	}
	if err := f.s.FetchBase(ctx); err != nil {
		return nil, err
	}
	defer f.s.Base.Close()
	if err := f.confirm(); err != nil {
		return nil, err
	}
	d, err := f.open(ctx)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	results := f.writeAll(ctx, d)
	if err := f.record(d, results); err != nil {
		return results, err
	}
	return results, outcome(ctx, results)
}

// run is one Flash: the options resolved against the recipe.
type run struct {
	opt Options
	s   *inputs.Session
	// builds are the build ids of the nodes written.
	builds map[string]string
}

// prepare checks that every target names a node of the recipe and
// prepares the inputs of those nodes.
func prepare(r *recipes.Recipe, opt Options) (*run, error) {
	var hosts []string
	for _, t := range opt.Targets {
		if !slices.ContainsFunc(r.Nodes, func(n recipes.Node) bool { return strings.EqualFold(n.Hostname, t.Node) }) {
			var valid []string
			for _, n := range r.Nodes {
				valid = append(valid, n.Hostname)
			}
			return nil, fmt.Errorf("%w %q; the recipe's nodes are: %s", fleet.ErrUnknownNode, t.Node, strings.Join(valid, ", "))
		}
		if !slices.Contains(hosts, strings.ToLower(t.Node)) {
			hosts = append(hosts, strings.ToLower(t.Node))
		}
	}
	nodes, err := fleet.Select(r, hosts, fleet.Shard{})
	if err != nil {
		return nil, err
	}
	s, err := inputs.Prepare(r, opt.Options, nodes)
	if err != nil {
		return nil, err
	}
	return &run{opt: opt, s: s, builds: map[string]string{}}, nil
}

// confirm refuses targets that must not be written and asks. It runs
// before the lock is taken: a prompt left open must not hold up a build,
// and a dry run or a "no" must not create the identity.
func (f *run) confirm() error {
	fi, err := os.Stat(f.s.Base.Image.Path)
	if err != nil {
		return err
	}
	if err := checkTargets(f.opt, fi.Size(), f.s.Base.Image.Path, f.s.OutDir); err != nil {
		return err
	}
	if f.opt.Confirm != nil {
		return f.opt.Confirm(fi.Size(), f.opt.Targets)
	}
	return nil
}

// open locks the output directory and settles the cluster's identity
// there, as build does.
func (f *run) open(ctx context.Context) (*outdir.Dir, error) {
	d, err := outdir.Open(ctx, f.s.OutDir, outdir.Options{Wait: f.opt.Wait, Logf: f.s.Logf})
	if err != nil {
		return nil, err
	}
	if err := f.s.SettleIdentity(d); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// writeAll writes every node to its targets. Nodes are prepared one after
// the other (a few MB of FAT edits and the head's sums each) while the
// targets of those before are written.
func (f *run) writeAll(ctx context.Context, d *outdir.Dir) []flash.Result {
	byNode := map[string][]int{}
	for i, t := range f.opt.Targets {
		byNode[strings.ToLower(t.Node)] = append(byNode[strings.ToLower(t.Node)], i)
	}
	results := make([]flash.Result, len(f.opt.Targets))
	var writes sync.WaitGroup
	var cleanups []func()
	for _, n := range f.s.Nodes {
		idx := byNode[strings.ToLower(n.Hostname)]
		src, cleanup, err := f.nodeSource(ctx, d, n)
		if err != nil {
			f.failed(ctx, results, idx, n.Hostname, err)
			continue
		}
		cleanups = append(cleanups, cleanup)
		for _, i := range idx {
			t := f.opt.Targets[i].Target
			writes.Go(func() {
				results[i] = flash.Write(ctx, src, t, progress.New(f.opt.Progress, n.Hostname+" → "+t.Path, src.Work()))
				logResult(f.s.Logf, results[i])
			})
		}
	}
	writes.Wait()
	for _, c := range cleanups {
		c()
	}
	return results
}

// failed records a node that could not be prepared as failed (or
// interrupted) on each of its targets, with nothing written to them.
func (f *run) failed(ctx context.Context, results []flash.Result, idx []int, host string, err error) {
	state := flash.Failed
	if ctx.Err() != nil {
		state = flash.Interrupted
	}
	for _, i := range idx {
		results[i] = flash.Result{Target: f.opt.Targets[i].Target, Source: host, State: state, Boot: "untouched",
			Err: fmt.Errorf("node %s: %w", host, err), At: time.Now().UTC()}
		logResult(f.s.Logf, results[i])
	}
}

// record adds the results to manifest.json, through the output
// directory's atomic writes, under its lock. The directory's identity is
// recorded as build records it, so that a flash into an empty directory
// leaves it as `pibake init` would.
func (f *run) record(d *outdir.Dir, results []flash.Result) error {
	return d.Update(func(m *outdir.Manifest) {
		if m.Cluster == "" {
			f.s.RecordRun(m)
		}
		f.s.RecordIdentity(m)
		m.Flashes = appendFlashes(m.Flashes, results, f.builds)
	})
}

// outcome is the error of a flash whose results are in: the
// interrupt, or which targets failed.
func outcome(ctx context.Context, results []flash.Result) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var failed []string
	for _, res := range results {
		if res.State != flash.Verified {
			failed = append(failed, fmt.Sprintf("%s (%s): %v", res.Target.Path, res.Source, res.Err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d %w; do not boot them:\n  %s", len(failed), len(results), ErrTargetsFailed, strings.Join(failed, "\n  "))
	}
	return nil
}

// logResult says how a target's write ended.
func logResult(logf func(string, ...any), res flash.Result) {
	if res.State == flash.Verified {
		logf("%s → %s: written and verified in %s, sha256 %s…", res.Source, res.Target.Path, res.Elapsed.Round(10*time.Millisecond), res.SHA256[:12])
		return
	}
	if errors.Is(res.Err, context.Canceled) {
		logf("%s → %s: interrupted; %s", res.Source, res.Target.Path, res.Boot)
		return
	}
	logf("%s → %s: FAILED: %v; %s", res.Source, res.Target.Path, res.Err, res.Boot)
}

// appendFlashes adds results to list; builds gives each node's build id
// (by hostname, as Result.Source names it).
func appendFlashes(list []outdir.Flash, results []flash.Result, builds map[string]string) []outdir.Flash {
	for _, res := range results {
		if res.Target.Path == "" {
			continue
		}
		f := outdir.Flash{Node: res.Source, Build: builds[res.Source], Target: res.Target.Path, Result: string(res.State), SHA256: res.SHA256, Time: res.At.Format(time.RFC3339)}
		if res.State != flash.Verified {
			f.SHA256 = ""
			f.Error = oneLineError(res.Err)
		}
		if d := res.Target.Disk; d != nil {
			f.Model, f.Serial = d.Model, d.Serial
		}
		list = append(list, f)
	}
	if len(list) > outdir.MaxFlashes {
		list = list[len(list)-outdir.MaxFlashes:]
	}
	return list
}

func oneLineError(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
