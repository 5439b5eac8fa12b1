package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/identity"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/progress"
	"github.com/pibake/pibake/recipes"
	"golang.org/x/sync/errgroup"
)

// Options configure Build.
type Options struct {
	// OutDir receives the images (default: the recipe's output.dir, else
	// ./out).
	OutDir string
	// Nodes limits the build to these hostnames.
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
	// Shard, when set, builds only that share of the nodes (see shard.go).
	Shard Shard
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
	StatusOrphan    = "orphan" // no longer in the recipe; kept
	StatusPruned    = "pruned" // no longer in the recipe; deleted (--prune)
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
	// Err says why a node failed.
	Err error `json:"-"`
}

// ErrUnknownNode is returned when --node names no node of the recipe.
var ErrUnknownNode = errors.New("unknown node")

// ErrNodesFailed is returned (wrapped) when some nodes failed; the others
// are finished and in the results.
var ErrNodesFailed = errors.New("nodes failed")

// Build writes one image per node of r, with its block map, checksums and
// a manifest, into an output directory that stays one consistent set
// whatever happens (see outdir.go). It returns a result for every node it
// was asked to build, and for every node the directory holds that is no
// longer in the recipe.
func Build(ctx context.Context, r *recipes.Recipe, opt Options) ([]NodeResult, error) {
	b, err := prepare(r, opt)
	if err != nil {
		return nil, err
	}
	baseImg, err := b.fetchBase(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w; nothing was built", err)
	}
	defer baseImg.img.Release()
	defer baseImg.xz.close()
	out, err := openOutput(ctx, b.outDir, opt.Wait, b.logf)
	if err != nil {
		return nil, err
	}
	defer out.close()
	if err := b.identity(out); err != nil {
		return nil, err
	}
	results := b.buildNodes(ctx, baseImg, out)
	return b.finish(ctx, baseImg, out, results)
}

// build is one run of Build: the options resolved against the recipe.
type build struct {
	r        *recipes.Recipe
	opt      Options
	nodes    []*recipes.Node
	outDir   string
	compress bool
	logf     func(string, ...any)
	token    string
	// tokenSource is "recipe" or "generated".
	tokenSource string
	// ca is the cluster CA with cluster.ca = "generate", else nil.
	ca *identity.CA
	// passwordGens are the nodes' password generations (0 when absent).
	passwordGens map[string]int
	// reportKey is the out directory's report key when a node reports.
	reportKey []byte
}

func prepare(r *recipes.Recipe, opt Options) (*build, error) {
	if opt.Jobs < 0 {
		return nil, fmt.Errorf("jobs is %d; it must be at least 1", opt.Jobs)
	}
	if opt.Jobs == 0 {
		opt.Jobs = runtime.NumCPU()
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.Event == nil {
		opt.Event = func(string, NodeStage) {}
	}
	nodes, err := selectNodes(r, opt.Nodes, opt.Shard)
	if err != nil {
		return nil, err
	}
	if err := checkRotations(r, nodes, opt.RotateNodePassword); err != nil {
		return nil, err
	}
	b := &build{r: r, opt: opt, nodes: nodes, outDir: opt.OutDir, compress: opt.Compress || r.Output.Compress, logf: opt.Logf}
	if b.outDir == "" {
		b.outDir = r.Output.Dir
	}
	if b.outDir == "" {
		b.outDir = "out"
	}
	return b, nil
}

// selectNodes picks the nodes --node names: by hostname, or by the label
// of a node block, which selects every node its count makes.
func selectNodes(r *recipes.Recipe, names []string, shard Shard) ([]*recipes.Node, error) {
	matches := func(n *recipes.Node, name string) bool {
		return strings.EqualFold(name, n.Hostname) || strings.EqualFold(name, n.Group)
	}
	var nodes []*recipes.Node
	for i := range r.Nodes {
		if !shard.has(i) {
			continue
		}
		if len(names) == 0 || slices.ContainsFunc(names, func(name string) bool { return matches(&r.Nodes[i], name) }) {
			nodes = append(nodes, &r.Nodes[i])
		}
	}
	for _, name := range names {
		if !slices.ContainsFunc(r.Nodes, func(n recipes.Node) bool { return matches(&n, name) }) {
			var valid, groups []string
			for _, n := range r.Nodes {
				valid = append(valid, n.Hostname)
				if n.Group != n.Hostname && !slices.Contains(groups, n.Group) {
					groups = append(groups, n.Group)
				}
			}
			blocks := ""
			if len(groups) > 0 {
				blocks = "; its node blocks (each selects all its nodes): " + strings.Join(groups, ", ")
			}
			return nil, fmt.Errorf("%w %q; the recipe's nodes are: %s%s", ErrUnknownNode, name, strings.Join(valid, ", "), blocks)
		}
	}
	return nodes, nil
}

// baseFacts is what every node's build needs to know about the base image.
type baseFacts struct {
	img     *base.Image
	release diskimg.Release
	stamp   time.Time // the one timestamp every write gets
	// editSpan is how much of the image, from the start, editing a
	// node's image reads or writes: the partition table, the boot
	// partition and the root file system's superblock (which
	// diskimg.Open checks).
	editSpan int64
	known    rangeSums // block-range sums of the base outside its boot partition
	// airgap maps each air-gap file to its SHA-256, hashed once per build.
	airgap map[string]string
	// xz is the base's own multi-block .xz, whose blocks past the boot
	// partition every node's .img.xz reuses; nil when there is none.
	xz *baseXZ
}

// fetchBase fetches, verifies and decompresses the base image (holding it
// in the cache until the build ends), learns its release and the one
// timestamp every write gets, refuses a base that cannot be built from,
// and hashes what every node shares.
func (b *build) fetchBase(ctx context.Context) (*baseFacts, error) {
	spec, pin := b.r.Image.Source, b.r.Image.SHA256
	if b.opt.Image != "" {
		spec, pin = b.opt.Image, ""
	}
	src, err := base.ParseSource(spec, pin)
	if err != nil {
		return nil, err
	}
	bopt := b.opt.Base
	bopt.Logf = b.logf
	if bopt.Progress == nil {
		bopt.Progress = b.opt.Progress
	}
	img, err := base.Fetch(ctx, src, bopt)
	if err != nil {
		return nil, err
	}
	facts, err := inspectBase(img)
	if err == nil {
		err = checkBase(facts.release)
	}
	if err == nil && facts.release.Style == diskimg.StyleBooted {
		b.logf("warning: the base image's cmdline.txt has neither first-boot marker (init=…firstboot or resize): it may have booted before; its root partition will not grow on first boot")
	}
	if err == nil {
		facts.known, err = baseRangeSums(ctx, bopt.Cache, img)
	}
	if err == nil {
		facts.airgap, err = airgapSums(ctx, b.r.Cluster.Airgap)
	}
	if err == nil && b.compress {
		var fi os.FileInfo
		if fi, err = os.Stat(img.Path); err == nil {
			facts.xz, err = openBaseXZ(img.XZ, fi.Size())
		}
		if err == nil && facts.xz == nil && img.XZ != "" {
			b.logf("the base .xz is a single block (or mixes check types): every node's .img.xz is compressed whole")
		}
	}
	if err != nil {
		img.Release()
		return nil, err
	}
	return facts, nil
}

// inspectBase reads the release and picks the timestamp for every entry
// written: SOURCE_DATE_EPOCH when set, else the base image's newest
// timestamp, so the output never depends on the clock.
func inspectBase(img *base.Image) (*baseFacts, error) {
	im, err := diskimg.Open(img.Path, false)
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	defer im.Close()
	boot, root := im.BootPartition(), im.RootPartition()
	facts := &baseFacts{img: img, editSpan: max(boot.Offset()+boot.Size(), root.Offset()+4096)}
	if facts.release, err = im.DetectRelease(); err != nil {
		return nil, fmt.Errorf("base image %s: %w", img.Path, err)
	}
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		sec, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", v)
		}
		facts.stamp = time.Unix(sec, 0).UTC()
		return facts, nil
	}
	if facts.stamp, err = im.NewestBootTime(); err != nil {
		return nil, fmt.Errorf("base image %s: %w", img.Path, err)
	}
	return facts, nil
}

// checkBase refuses a base image that cannot boot or that was already set
// up for some machine: its settings (Wi-Fi key, SSH keys, static address,
// user) would leak into every node.
func checkBase(rel diskimg.Release) error {
	if err := rel.Bootable(); err != nil {
		return fmt.Errorf("base image: %w", err)
	}
	if len(rel.Customised) > 0 {
		return fmt.Errorf("base image: it was already customised for a machine (%s); build from an unmodified Raspberry Pi OS image (pibake fetch, or the .img.xz as downloaded), never from a card or image that Raspberry Pi Imager or pibake has written",
			strings.Join(rel.Customised, "; "))
	}
	return nil
}

// firstbootBase is what decides how a payload is activated on rel.
func firstbootBase(rel diskimg.Release) firstboot.Base {
	return firstboot.Base{CloudInit: rel.CloudInit, SystemdFirstBoot: rel.MachineID == diskimg.MachineIDUninitialized}
}

// airgapSums hashes the air-gap files once per build.
func airgapSums(ctx context.Context, a *recipes.Airgap) (map[string]string, error) {
	sums := map[string]string{}
	if a == nil {
		return sums, nil
	}
	for _, p := range []string{a.K3sBinary, a.Images, a.InstallScript} {
		if p == "" {
			continue
		}
		sum, _, err := files.SHA256(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("air-gap file: %w", err)
		}
		sums[p] = sum
	}
	return sums, nil
}

// identity settles the cluster's identity in the output directory, under
// its lock: the directory must not hold another cluster's images, and the
// token is the recipe's or the one kept there.
func (b *build) identity(out *output) error {
	if c := out.m.Cluster; c != "" && c != b.r.Cluster.Name && !b.opt.NewCluster {
		return fmt.Errorf("%w: %s holds the images of cluster %q, and this recipe builds cluster %q; use another --out, or --new-cluster to replace them", ErrNewCluster, b.outDir, c, b.r.Cluster.Name)
	}
	if err := b.checkShardSecrets(out); err != nil {
		return err
	}
	var err error
	b.token, b.tokenSource, err = out.clusterToken(b.r, b.opt.NewCluster)
	if err != nil {
		return err
	}
	// The CA first: a CA refused (a new cluster not asked for) must not
	// leave a --rotate-node-password recorded for a build that never ran.
	if err := b.settleCA(out, time.Now()); err != nil {
		return err
	}
	if err := b.settleNodePasswords(out); err != nil {
		return err
	}
	// Last: nothing refused after it, so a new key is never kept for a
	// build that does not happen.
	b.reportKey, err = out.reportKey(b.r, b.opt.NewCluster)
	return err
}

// buildNodes builds the selected nodes, opt.Jobs at a time, each published
// into out as soon as it is done. A failed node does not stop the others;
// an interrupt stops them all, and nodes not finished are not published.
func (b *build) buildNodes(ctx context.Context, facts *baseFacts, out *output) []NodeResult {
	results := make([]NodeResult, len(b.nodes))
	g := new(errgroup.Group)
	g.SetLimit(b.opt.Jobs)
	for i, n := range b.nodes {
		g.Go(func() error {
			nb := &nodeBuild{build: b, node: n, base: facts, out: out}
			results[i] = nb.run(ctx)
			return nil
		})
	}
	g.Wait()
	return results
}

// orphans reports the nodes the directory holds that are no longer in the
// recipe, deleting them with Prune.
func (b *build) orphans(ctx context.Context, out *output, inRecipe map[string]*recipes.Node) ([]NodeResult, error) {
	var hosts []string
	for _, e := range out.m.Nodes {
		if inRecipe[e.Hostname] == nil {
			hosts = append(hosts, e.Hostname)
		}
	}
	var results []NodeResult
	for _, host := range hosts {
		e := out.m.find(host)
		res := NodeResult{Hostname: host, Role: e.Role, Status: StatusOrphan, File: filepath.Join(b.outDir, e.File), Size: e.Size, SHA256: e.SHA256}
		if b.opt.Prune && ctx.Err() == nil {
			if err := out.remove(host); err != nil {
				return results, fmt.Errorf("prune %s: %w", host, err)
			}
			res.Status, res.File = StatusPruned, ""
			b.logf("%s: not in the recipe; its image was deleted (--prune)", host)
		} else {
			b.logf("%s: not in the recipe any more; its image stays (pibake build --prune deletes it)", host)
		}
		results = append(results, res)
	}
	return results, nil
}

// finish records the state of every node the directory holds, deals with
// nodes no longer in the recipe, and says what failed.
func (b *build) finish(ctx context.Context, facts *baseFacts, out *output, results []NodeResult) ([]NodeResult, error) {
	inRecipe := map[string]*recipes.Node{}
	for i := range b.r.Nodes {
		inRecipe[b.r.Nodes[i].Hostname] = &b.r.Nodes[i]
	}
	orphans, err := b.orphans(ctx, out, inRecipe)
	results = append(results, orphans...)
	if err != nil {
		return results, err
	}
	// Every node's state: is its image made from what the recipe and base
	// say now?
	current := map[string]string{}
	for _, n := range b.r.Nodes {
		if in, err := b.inputs(facts, n); err == nil {
			current[n.Hostname] = in
		}
	}
	err = out.update(func(m *manifest) {
		for i := range m.Nodes {
			e := &m.Nodes[i]
			switch want, ok := current[e.Hostname]; {
			case !ok && inRecipe[e.Hostname] == nil:
				e.State = StateOrphan
			case e.Inputs == want:
				e.State = StateCurrent
			default:
				e.State = StateOutdated
			}
		}
		m.PibakeVersion, m.Cluster, m.RecipeHash = b.opt.Version, b.r.Cluster.Name, b.recipeHash()
		m.Base = manifestBase{Source: facts.img.Source, FinalURL: facts.img.FinalURL, SHA256: facts.img.SHA256,
			Style: facts.release.Style, OSRelease: facts.release.PrettyName}
		b.recordIdentity(m)
	})
	if err != nil {
		return results, err
	}
	if err := ctx.Err(); err != nil {
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
		return results, fmt.Errorf("%d of %d %w (%s):\n  %s", len(failed), len(b.nodes), ErrNodesFailed, strings.Join(failed, ", "), strings.Join(reasons, "\n  "))
	}
	return results, nil
}
