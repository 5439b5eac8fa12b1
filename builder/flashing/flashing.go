package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pibake/pibake/builder/flash"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/progress"
	"github.com/pibake/pibake/internal/sparse"
	"github.com/pibake/pibake/recipes"
)

// FlashOptions configure Flash and FlashImage.
type FlashOptions struct {
	// Options are the build's: the output directory (its token, CA and
	// node passwords are the ones flash writes, under its lock), the
	// cache, the base image, Jobs, Wait, Version, Logf and Progress.
	Options
	// Targets pair each target with the node written to it (Flash) or
	// just list them (FlashImage).
	Targets []FlashTarget
	// AllowFixed lets fixed (not removable, not USB) disks be written.
	AllowFixed bool
	// Confirm, when set, is shown the plan once every target has passed
	// the checks and before anything is written; an error stops the
	// flash with nothing written (a "no" at the prompt, --dry-run).
	Confirm func(size int64, targets []FlashTarget) error
}

// FlashTarget is one target and the node written to it.
type FlashTarget struct {
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
// data in a sparse file in the output directory, because the FAT editor
// works on a file), while the rest is read from the base. The payload,
// the edit and the mapped ranges come from the code build uses, so a
// flashed device holds byte for byte what `pibake build` writes to the
// node's .img; when the output directory lists that node built from the
// same inputs, its SHA-256 is checked too. The identity (token, CA, node
// passwords) is settled as build does, under the output directory's lock,
// which flash holds throughout: flash needs no earlier build. Each result
// is recorded in manifest.json.
func Flash(ctx context.Context, r *recipes.Recipe, opt FlashOptions) ([]flash.Result, error) {
	var hosts []string
	for _, t := range opt.Targets {
		if !slices.ContainsFunc(r.Nodes, func(n recipes.Node) bool { return strings.EqualFold(n.Hostname, t.Node) }) {
			var valid []string
			for _, n := range r.Nodes {
				valid = append(valid, n.Hostname)
			}
			return nil, fmt.Errorf("%w %q; the recipe's nodes are: %s", ErrUnknownNode, t.Node, strings.Join(valid, ", "))
		}
		if !slices.Contains(hosts, strings.ToLower(t.Node)) {
			hosts = append(hosts, strings.ToLower(t.Node))
		}
	}
	bopt := opt.Options
	bopt.Nodes = hosts
	b, err := prepare(r, bopt)
	if err != nil {
		return nil, err
	}
	facts, err := b.fetchBase(ctx)
	if err != nil {
		return nil, err
	}
	defer facts.img.Release()
	defer facts.xz.close()
	fi, err := os.Stat(facts.img.Path)
	if err != nil {
		return nil, err
	}
	if err := checkTargets(opt, fi.Size(), facts.img.Path, b.outDir); err != nil {
		return nil, err
	}
	// Asked before the lock is taken: a prompt left open must not hold up
	// a build, and a dry run or a "no" must not create the identity.
	if opt.Confirm != nil {
		if err := opt.Confirm(fi.Size(), opt.Targets); err != nil {
			return nil, err
		}
	}
	out, err := openOutput(ctx, b.outDir, opt.Wait, b.logf)
	if err != nil {
		return nil, err
	}
	defer out.close()
	if err := b.identity(out); err != nil {
		return nil, err
	}

	byNode := map[string][]int{}
	for i, t := range opt.Targets {
		byNode[strings.ToLower(t.Node)] = append(byNode[strings.ToLower(t.Node)], i)
	}
	results := make([]flash.Result, len(opt.Targets))
	var writes sync.WaitGroup
	var cleanups []func()
	defer func() {
		for _, c := range cleanups {
			c()
		}
	}()
	// Nodes are prepared one after the other (a few MB of FAT edits and
	// the head's sums each) while the targets of those before are written.
	builds := map[string]string{}
	for _, n := range b.nodes {
		idx := byNode[strings.ToLower(n.Hostname)]
		src, build, cleanup, err := b.nodeSource(ctx, facts, out, n)
		builds[n.Hostname] = build
		if err != nil {
			state := flash.Failed
			if ctx.Err() != nil {
				state = flash.Interrupted
			}
			for _, i := range idx {
				results[i] = flash.Result{Target: opt.Targets[i].Target, Source: n.Hostname, State: state, Boot: "untouched",
					Err: fmt.Errorf("node %s: %w", n.Hostname, err), At: time.Now().UTC()}
				b.logResult(results[i])
			}
			continue
		}
		cleanups = append(cleanups, cleanup)
		for _, i := range idx {
			t := opt.Targets[i].Target
			writes.Go(func() {
				results[i] = flash.Write(ctx, src, t, progress.New(b.opt.Progress, n.Hostname+" → "+t.Path, src.Work()))
				b.logResult(results[i])
			})
		}
	}
	writes.Wait()
	if err := b.recordFlashes(out, results, builds); err != nil {
		return results, err
	}
	return results, flashOutcome(ctx, results)
}

// flashOutcome is the error of a flash whose results are in: the
// interrupt, or which targets failed.
func flashOutcome(ctx context.Context, results []flash.Result) error {
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

// checkTargets refuses, before anything is written, a target that must not
// be written: a disk in use, the running system's, a fixed disk without
// AllowFixed, a disk too small, the image itself, one target named twice.
func checkTargets(opt FlashOptions, size int64, image, outDir string) error {
	var refusals []string
	seen := map[string]bool{}
	realOut := realPath(outDir)
	for _, t := range opt.Targets {
		if t.Target.IsFile() && outDir != "" && filepath.Dir(realPath(t.Target.Path)) == realOut {
			// The output directory's files are one published set
			// (outdir.go): a target there would overwrite a listed image.
			refusals = append(refusals, fmt.Sprintf("%s is in the output directory %s; write plain-file targets elsewhere", t.Target.Path, outDir))
			continue
		}
		key := t.Target.Path
		if t.Target.Disk != nil {
			key = t.Target.Disk.Dev
		}
		if seen[key] {
			refusals = append(refusals, fmt.Sprintf("%s is named twice", t.Target.Path))
			continue
		}
		seen[key] = true
		if t.Target.SameFile(image) {
			refusals = append(refusals, fmt.Sprintf("%s is the image being written", t.Target.Path))
			continue
		}
		if err := t.Target.Check(size, opt.AllowFixed); err != nil {
			refusals = append(refusals, err.Error())
		}
	}
	if len(refusals) > 0 {
		return fmt.Errorf("%w; nothing was written:\n  %s", ErrRefused, strings.Join(refusals, "\n  "))
	}
	return nil
}

// realPath is p absolute with its symlinks resolved, as far as it exists:
// a symlink elsewhere that points into the output directory is in it,
// also while what it points to does not exist yet (writing creates it).
func realPath(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	for range 40 { // the kernel's own limit on a chain of links
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			return r
		}
		link, err := os.Readlink(abs)
		if err != nil {
			break
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join(filepath.Dir(abs), link)
		}
		abs = link
	}
	if r, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		return filepath.Join(r, filepath.Base(abs))
	}
	return abs
}

func (b *build) logResult(res flash.Result) {
	if res.State == flash.Verified {
		b.logf("%s → %s: written and verified in %s, sha256 %s…", res.Source, res.Target.Path, res.Elapsed.Round(10*time.Millisecond), res.SHA256[:12])
		return
	}
	if errors.Is(res.Err, context.Canceled) {
		b.logf("%s → %s: interrupted; %s", res.Source, res.Target.Path, res.Boot)
		return
	}
	b.logf("%s → %s: FAILED: %v; %s", res.Source, res.Target.Path, res.Err, res.Boot)
}

// nodeSource makes node n's image as a flash source: its edited head in a
// sparse temporary file in the output directory (mode 0600, removed by
// cleanup, and by the next run's sweep if killed), the rest read from the
// base. Its ranges are the block map's: the data extents of head and
// base, widened to whole blocks; their sums are the base's cached ones
// where a range lies past the head, else hashed here. build is the
// image's build id, as build gives it to the node.
func (b *build) nodeSource(ctx context.Context, facts *baseFacts, out *output, n *recipes.Node) (src *flash.Source, build string, cleanup func(), err error) {
	inputs, err := b.inputs(facts, *n)
	if err != nil {
		return nil, "", nil, err
	}
	build = inputs[:16]
	payload, err := b.render(facts, n, inputs)
	if err != nil {
		return nil, build, nil, err
	}
	part := out.path(n.Hostname + ".flash.part")
	os.Remove(part)
	c, err := startHead(ctx, part, facts, payload)
	if err != nil {
		return nil, build, nil, err
	}
	size := c.size
	c.in.Close()
	if err := c.out.Close(); err != nil {
		os.Remove(part)
		return nil, build, nil, err
	}
	head, err := os.Open(part)
	if err != nil {
		os.Remove(part)
		return nil, build, nil, err
	}
	tail, err := os.Open(facts.img.Path)
	if err != nil {
		head.Close()
		os.Remove(part)
		return nil, build, nil, err
	}
	cleanup = func() {
		head.Close()
		tail.Close()
		os.Remove(part)
	}
	src, err = splitSource(ctx, n.Hostname, head, tail, facts.editSpan, size, facts.known)
	if err != nil {
		cleanup()
		return nil, build, nil, err
	}
	if prev, ok := out.entry(n.Hostname); ok && prev.Inputs == inputs {
		// Built from the same inputs: the device must read back as that
		// image does.
		src.SHA256 = prev.SHA256
	}
	return src, build, cleanup, nil
}

// splitReader reads [0, split) from head and the rest from tail.
type splitReader struct {
	head, tail io.ReaderAt
	split      int64
}

func (s splitReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.split {
		return s.tail.ReadAt(p, off)
	}
	if off+int64(len(p)) <= s.split {
		return s.head.ReadAt(p, off)
	}
	k := s.split - off
	n, err := s.head.ReadAt(p[:k], off)
	if err != nil {
		return n, err
	}
	m, err := s.tail.ReadAt(p[k:], s.split)
	return n + m, err
}

// splitSource is the flash source for an image whose [0, split) is head's
// and the rest tail's, of size bytes.
func splitSource(ctx context.Context, name string, head, tail *os.File, split, size int64, known rangeSums) (*flash.Source, error) {
	exts := sparse.Extents(head, 0, split)
	exts = append(exts, sparse.Extents(tail, split, size-split)...)
	r := splitReader{head: head, tail: tail, split: split}
	src := &flash.Source{Name: name, R: r, Size: size}
	buf := make([]byte, 1<<20)
	for _, br := range blockRanges(exts) {
		from, to := br[0]*bmapBlockSize, min((br[1]+1)*bmapBlockSize, size)
		sum, ok := known[br]
		if !ok || from < split {
			h := sha256.New()
			if err := hashRangeAt(ctx, h, r, from, to, buf); err != nil {
				return nil, fmt.Errorf("hash %s: %w", name, err)
			}
			sum = hex.EncodeToString(h.Sum(nil))
		}
		src.Ranges = append(src.Ranges, flash.Range{Off: from, End: to, SHA256: sum})
	}
	return src, nil
}

// hashRangeAt writes [from, to) of r to w, stopping when ctx is cancelled.
func hashRangeAt(ctx context.Context, w io.Writer, r io.ReaderAt, from, to int64, buf []byte) error {
	for p := from; p < to; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(int64(len(buf)), to-p)
		if n, err := r.ReadAt(buf[:k], p); int64(n) < k {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		w.Write(buf[:k])
		p += k
	}
	return nil
}

// maxFlashRecords bounds the flash history manifest.json keeps.
const maxFlashRecords = 1000

// recordFlashes adds the results to manifest.json, through the output
// directory's atomic writes, under its lock. The directory's identity is
// recorded as build records it, so that a flash into an empty directory
// leaves it as `pibake init` would.
func (b *build) recordFlashes(out *output, results []flash.Result, builds map[string]string) error {
	return out.update(func(m *manifest) {
		if m.Cluster == "" {
			m.PibakeVersion, m.Cluster, m.RecipeHash = b.opt.Version, b.r.Cluster.Name, b.recipeHash()
		}
		b.recordIdentity(m)
		m.Flashes = appendFlashes(m.Flashes, results, builds)
	})
}

// appendFlashes adds results to list; builds gives each node's build id
// (by hostname, as Result.Source names it).
func appendFlashes(list []manifestFlash, results []flash.Result, builds map[string]string) []manifestFlash {
	for _, res := range results {
		if res.Target.Path == "" {
			continue
		}
		f := manifestFlash{Node: res.Source, Build: builds[res.Source], Target: res.Target.Path, Result: string(res.State), SHA256: res.SHA256, Time: res.At.Format(time.RFC3339)}
		if res.State != flash.Verified {
			f.SHA256 = ""
			f.Error = oneLineError(res.Err)
		}
		if d := res.Target.Disk; d != nil {
			f.Model, f.Serial = d.Model, d.Serial
		}
		list = append(list, f)
	}
	if len(list) > maxFlashRecords {
		list = list[len(list)-maxFlashRecords:]
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

// FlashImage writes a built image (.img, or .img.xz) to the targets. Its
// ranges and their sums come from its .bmap beside it (required for an
// .img.xz; for an .img without one, from its data extents, hashed here).
// When the image is in a pibake output directory that lists it, the
// device must read back with the SHA-256 listed there, and the results
// are recorded in its manifest.json under the directory's lock.
func FlashImage(ctx context.Context, path string, opt FlashOptions) ([]flash.Result, error) {
	logf := opt.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	src, closeSrc, err := imageSource(ctx, path)
	if err != nil {
		return nil, err
	}
	defer closeSrc()
	dir, file := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	outDir := ""
	if files.Exists(filepath.Join(dir, "manifest.json")) {
		outDir = dir
	}
	if err := checkTargets(opt, src.Size, path, outDir); err != nil {
		return nil, err
	}
	// Asked before the lock is taken, as Flash does: a prompt left open
	// must not hold up a build of the directory.
	if opt.Confirm != nil {
		if err := opt.Confirm(src.Size, opt.Targets); err != nil {
			return nil, err
		}
	}
	var out *output
	builds := map[string]string{}
	if outDir != "" {
		if out, err = openOutput(ctx, dir, opt.Wait, logf); err != nil {
			return nil, err
		}
		defer out.close()
		for _, e := range out.m.Nodes {
			if e.File == file || e.XZ == file {
				src.SHA256, src.Name = e.SHA256, e.Hostname
				if len(e.Inputs) >= 16 {
					builds[e.Hostname] = e.Inputs[:16]
				}
			}
		}
	}
	results := make([]flash.Result, len(opt.Targets))
	var wg sync.WaitGroup
	for i, t := range opt.Targets {
		wg.Go(func() {
			results[i] = flash.Write(ctx, src, t.Target, progress.New(opt.Progress, file+" → "+t.Target.Path, src.Work()))
			(&build{logf: logf}).logResult(results[i])
		})
	}
	wg.Wait()
	if out != nil {
		if err := out.update(func(m *manifest) { m.Flashes = appendFlashes(m.Flashes, results, builds) }); err != nil {
			return results, err
		}
	}
	return results, flashOutcome(ctx, results)
}
