// Package builder builds a recipe's node images into an output directory:
// Build reads as its steps, each over the packages below it (inputs for
// what an image is made from, nodeimage for its bytes, outdir for the
// directory's files; docs/architecture.md draws the graph).
package builder

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/delta"
	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/builder/inputs"
	"github.com/pibake/pibake/builder/nodeimage"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/builder/outdir/seam"
	"github.com/pibake/pibake/builder/sign"
	"github.com/pibake/pibake/internal/progress"
	"github.com/pibake/pibake/recipes"
	"golang.org/x/sync/errgroup"
)

// Options configure Build.
type Options struct {
	// OutDir receives the images (default: the recipe's output.dir, else
	// ./out).
	OutDir string
	// Nodes limits the build to these hostnames, or node block labels.
	Nodes []string
	// Jobs is how many nodes build at once (default: number of CPUs).
	Jobs int
	// Base says where the cache is and how to download.
	Base base.Options
	// Image overrides the recipe's image source (its sha256 pin is then
	// not used).
	Image string
	// Compress also writes <host>.img.xz (the recipe's output.compress
	// turns it on too).
	Compress bool
	// Force rebuilds nodes whose inputs did not change.
	Force bool
	// Wait queues behind another build that is writing the output
	// directory, instead of failing at once.
	Wait bool
	// Prune deletes the images of nodes that are no longer in the recipe;
	// without it they stay, listed as orphans.
	Prune bool
	// NewCluster generates a new cluster token (and, with cluster.ca =
	// "generate", a new CA) even though the output directory holds images
	// built with the one that is missing or different: every node is
	// rebuilt.
	NewCluster bool
	// Shard, when set, builds only that share of the nodes.
	Shard fleet.Shard
	// RotateNodePassword gives these nodes a new node password (the next
	// generation), for a node whose card may have been stolen.
	RotateNodePassword []string
	// Version is pibake's version, recorded in the manifest and part of
	// every node's inputs.
	Version string
	// Logf receives progress lines.
	Logf func(format string, args ...any)
	// Progress, when set, is told how far long work has come: the
	// download, the decompression, each node's image and .img.xz.
	Progress progress.Func
	// Event, when set, is told as each node reaches a stage: for
	// progress displays, and for tests that act at a given moment.
	Event func(host string, stage NodeStage)
	// OutFS, when set, is where the output directory's filesystem steps
	// go: a test stops them after any step.
	OutFS seam.FS
	// Lock is the lock file the recipe was built with (already applied
	// to it), for the provenance.
	Lock *recipes.Lock
	// SignKey, when set, signs SHA256SUMS and provenance.json at the end
	// of a build in which no node failed (outdir.Dir.Sign): an OpenSSH
	// private key file, or the .pub file of a key ssh-agent holds
	// (sign.Load). It is loaded before anything else, its passphrase
	// asked with Prompt (nil: sign.TerminalPrompt). A shard never signs:
	// its merge does.
	SignKey string
	Prompt  sign.Prompt

	// spent, when set (by a benchmark), adds up the time the SBOMs and
	// the records take (what issue 26 adds to a build), and apart from
	// it the changes against the base (delta).
	spent *supplySpent
}

// supplySpent is where a benchmark reads the supply chain's share of a
// build.
type supplySpent struct{ sbomAndRecords, delta atomic.Int64 }

// since adds the time since start to c, when measuring.
func (s *supplySpent) since(c func(*supplySpent) *atomic.Int64, start time.Time) {
	if s != nil {
		c(s).Add(int64(time.Since(start)))
	}
}

// NodeStage is a point in a node's build that Options.Event reports.
type NodeStage string

// The stages Options.Event reports, in order.
const (
	// StageWritten: the image is written and verified under its
	// temporary name.
	StageWritten NodeStage = "written"
	// StagePublished: the node's files have their final names and are
	// listed in SHA256SUMS and manifest.json.
	StagePublished NodeStage = "published"
)

// Node statuses in a NodeResult.
const (
	StatusBuilt     = "built"
	StatusUnchanged = "unchanged"
	StatusFailed    = "failed"
	// StatusInterrupted: Ctrl-C or SIGTERM stopped the build before the
	// node was published; its image from before, if any, stays (File).
	StatusInterrupted = "interrupted"
	StatusOrphan      = "orphan" // no longer in the recipe; kept
	StatusPruned      = "pruned" // no longer in the recipe; deleted (--prune)
)

// NodeResult is what Build did for one node.
type NodeResult struct {
	Hostname string `json:"hostname"`
	Role     string `json:"role"`
	Status   string `json:"status"`
	File     string `json:"file,omitempty"` // path of the .img
	XZ       string `json:"xz,omitempty"`
	Size     int64  `json:"size,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	// XZBlocks says how this build made the .img.xz (--compress): the
	// base's blocks copied, those compressed again and why.
	XZBlocks *nodeimage.XZStats `json:"xz_blocks,omitempty"`
	// Err says why a node failed.
	Err error `json:"-"`
}

// ErrNodesFailed is returned (wrapped) when some nodes failed; the others
// are finished and in the results.
var ErrNodesFailed = errors.New("nodes failed")

// Build writes one image per node of r, with its block map, checksums and
// a manifest, into an output directory that stays one consistent set
// whatever happens (package outdir). It returns a result for every node
// it was asked to build, and for every node the directory holds that is
// no longer in the recipe.
func Build(ctx context.Context, r *recipes.Recipe, opt Options) ([]NodeResult, error) {
	b, err := prepare(r, opt)
	if err != nil {
		return nil, err
	}
	if b.signer, err = fleet.LoadSigner(opt.SignKey, opt.Prompt); err != nil {
		return nil, err
	}
	defer b.signer.Close()
	if err := b.fetchBase(ctx); err != nil {
		return nil, err
	}
	defer b.s.Base.Close()
	if err := b.s.LearnSupply(ctx); err != nil {
		return nil, err
	}
	if err := b.open(ctx); err != nil {
		return nil, err
	}
	defer b.out.Close()
	b.readDelta()
	results := b.buildNodes(ctx)
	b.stillPublished(results)
	return b.finish(ctx, results)
}

// build is one run of Build: the options resolved against the recipe.
type build struct {
	r   *recipes.Recipe
	opt Options
	s   *inputs.Session
	out *outdir.Dir

	deltaMu sync.Mutex
	// deltas are the changes of the nodes built in this run, for
	// delta.json; prevDelta is the directory's delta.json as the run
	// found it, for the nodes it does not build.
	deltas    map[string]*delta.Node
	prevDelta *delta.Record
	// signer is the --sign-key's, or nil.
	signer *sign.Signer
}

// prepare selects the nodes (--node, --shard) and resolves the options.
func prepare(r *recipes.Recipe, opt Options) (*build, error) {
	if opt.Event == nil {
		opt.Event = func(string, NodeStage) {}
	}
	if opt.Shard.Count > 0 && opt.SignKey != "" {
		return nil, fmt.Errorf("--sign-key with --shard: %w", fleet.ErrShardSigns)
	}
	nodes, err := fleet.Select(r, opt.Nodes, opt.Shard)
	if err != nil {
		return nil, err
	}
	if err := fleet.CheckRotations(r, nodes, opt.RotateNodePassword); err != nil {
		return nil, err
	}
	iopt := inputs.Options{
		OutDir: opt.OutDir, Jobs: opt.Jobs, Base: opt.Base, Image: opt.Image, Compress: opt.Compress,
		NewCluster: opt.NewCluster, RotateNodePassword: opt.RotateNodePassword, Version: opt.Version,
		Logf: opt.Logf, Progress: opt.Progress,
	}
	if opt.Shard.Count > 0 {
		iopt.Check = func(d *outdir.Dir) error {
			return fleet.CheckShardSecrets(r, d, opt.NewCluster, opt.RotateNodePassword)
		}
	}
	s, err := inputs.Prepare(r, iopt, nodes)
	if err != nil {
		return nil, fmt.Errorf("%w; nothing was built", err)
	}
	return &build{r: r, opt: opt, s: s, deltas: map[string]*delta.Node{}}, nil
}

// fetchBase fetches, verifies and inspects the base image; nothing is
// built without it.
func (b *build) fetchBase(ctx context.Context) error {
	err := b.s.FetchBase(ctx)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("%w; nothing was built", err)
	}
	return err
}

// open locks the output directory (finishing what a killed build left)
// and settles the cluster's identity there.
func (b *build) open(ctx context.Context) error {
	out, err := outdir.Open(ctx, b.s.OutDir, outdir.Options{Wait: b.opt.Wait, Logf: b.s.Logf, FS: b.opt.OutFS})
	if err != nil {
		return err
	}
	if err := b.s.SettleIdentity(out); err != nil {
		out.Close()
		return err
	}
	b.out = out
	return nil
}

// buildNodes builds the selected nodes, opt.Jobs at a time, each published
// as soon as it is done. A failed node does not stop the others; an
// interrupt stops them all, and nodes not finished are not published.
func (b *build) buildNodes(ctx context.Context) []NodeResult {
	results := make([]NodeResult, len(b.s.Nodes))
	g := new(errgroup.Group)
	g.SetLimit(b.s.Opt.Jobs)
	for i, n := range b.s.Nodes {
		g.Go(func() error {
			results[i] = (&nodeBuild{build: b, node: n}).run(ctx)
			return nil
		})
	}
	g.Wait()
	return results
}

// stillPublished fills in, for the nodes that failed or were interrupted,
// the image from before that the directory still holds: the summary
// shows what is published, not only what this run wrote.
func (b *build) stillPublished(results []NodeResult) {
	m := b.out.Manifest()
	for i := range results {
		res := &results[i]
		if res.Status != StatusFailed && res.Status != StatusInterrupted {
			continue
		}
		if e := m.Node(res.Hostname); e != nil {
			res.File, res.Size, res.SHA256 = filepath.Join(b.s.OutDir, e.File), e.Size, e.SHA256
		}
	}
}

// finish deals with nodes no longer in the recipe, records the state of
// every node the directory holds, and says what failed.
func (b *build) finish(ctx context.Context, results []NodeResult) ([]NodeResult, error) {
	orphans, err := b.orphans(ctx)
	results = append(results, orphans...)
	if err != nil {
		return results, err
	}
	if err := b.out.Update(b.recordStates); err != nil {
		return results, err
	}
	if err := ctx.Err(); err != nil {
		return results, err
	}
	if err := b.writeRecords(ctx); err != nil {
		return results, err
	}
	var failed, reasons []string
	for _, res := range results {
		if res.Status == StatusFailed {
			failed = append(failed, res.Hostname)
			reasons = append(reasons, fmt.Sprintf("node %s: %v", res.Hostname, res.Err))
		}
	}
	if len(failed) > 0 {
		if b.signer != nil {
			b.s.Logf("not signed: nodes failed")
		}
		return results, fmt.Errorf("%d of %d %w (%s):\n  %s", len(failed), len(b.s.Nodes), ErrNodesFailed, strings.Join(failed, ", "), strings.Join(reasons, "\n  "))
	}
	return results, b.sign()
}

// orphans reports the nodes the directory holds that are no longer in the
// recipe, deleting them with Prune.
func (b *build) orphans(ctx context.Context) ([]NodeResult, error) {
	var results []NodeResult
	for _, e := range b.out.Manifest().Nodes {
		if b.inRecipe(e.Hostname) {
			continue
		}
		res := NodeResult{Hostname: e.Hostname, Role: e.Role, Status: StatusOrphan, File: filepath.Join(b.s.OutDir, e.File), Size: e.Size, SHA256: e.SHA256}
		if b.opt.Prune && ctx.Err() == nil {
			if err := b.out.Remove(e.Hostname); err != nil {
				return results, fmt.Errorf("prune %s: %w", e.Hostname, err)
			}
			res.Status, res.File = StatusPruned, ""
			b.s.Logf("%s: not in the recipe; its image was deleted (--prune)", e.Hostname)
		} else {
			b.s.Logf("%s: not in the recipe any more; its image stays (pibake build --prune deletes it)", e.Hostname)
		}
		results = append(results, res)
	}
	return results, nil
}

func (b *build) inRecipe(host string) bool {
	for _, n := range b.r.Nodes {
		if n.Hostname == host {
			return true
		}
	}
	return false
}

// recordStates records in the manifest what the run was made from, and
// every node's state: is its image made from what the recipe and base
// say now?
func (b *build) recordStates(m *outdir.Manifest) {
	current := map[string]string{}
	for _, n := range b.r.Nodes {
		if in, err := b.s.Inputs(n); err == nil {
			current[n.Hostname] = in
		}
	}
	for i := range m.Nodes {
		e := &m.Nodes[i]
		switch want, ok := current[e.Hostname]; {
		case !ok && !b.inRecipe(e.Hostname):
			e.State = outdir.StateOrphan
		case e.Inputs == want:
			e.State = outdir.StateCurrent
		default:
			e.State = outdir.StateOutdated
		}
	}
	b.s.RecordRun(m)
	m.Shard = ""
	if b.opt.Shard.Count > 0 {
		m.Shard = b.opt.Shard.String()
	}
	base := b.s.Base
	m.Base = outdir.Base{Source: base.Image.Source, FinalURL: base.Image.FinalURL, SHA256: base.Image.SHA256,
		Style: base.Release.Style, OSRelease: base.Release.PrettyName}
}
