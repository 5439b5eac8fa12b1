package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/internal/atomicfile"
	"github.com/pibake/pibake/internal/sparse"
	"github.com/pibake/pibake/recipes"
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
	// Version is pibake's version, recorded in the manifest and part of
	// every node's inputs.
	Version string
	// Logf receives progress lines.
	Logf func(format string, args ...any)
}

// NodeResult is what Build did for one node.
type NodeResult struct {
	Hostname string `json:"hostname"`
	Role     string `json:"role"`
	File     string `json:"file"` // path of the .img
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	Skipped  bool   `json:"skipped"`
	XZ       string `json:"xz,omitempty"`
}

// ErrUnknownNode is returned when --node names no node of the recipe.
var ErrUnknownNode = errors.New("unknown node")

// Build writes one image per node of r, with its block map, checksums and
// a manifest. It returns the results of the nodes it was asked to build;
// when some fail, the others are still finished and the error names the
// failed ones.
func Build(ctx context.Context, r *recipes.Recipe, opt Options) ([]NodeResult, error) {
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.Jobs < 1 {
		opt.Jobs = runtime.NumCPU()
	}
	nodes, err := selectNodes(r, opt.Nodes)
	if err != nil {
		return nil, err
	}
	outDir := opt.OutDir
	if outDir == "" {
		outDir = r.Output.Dir
	}
	if outDir == "" {
		outDir = "out"
	}
	compress := opt.Compress || r.Output.Compress

	// 1. Fetch, verify and decompress the base image.
	spec, pin := r.Image.Source, r.Image.SHA256
	if opt.Image != "" {
		spec, pin = opt.Image, ""
	}
	src, err := base.ParseSource(spec, pin)
	if err != nil {
		return nil, err
	}
	opt.Base.Logf = opt.Logf
	baseImg, err := base.Fetch(ctx, src, opt.Base)
	if err != nil {
		return nil, err
	}

	// 2. Learn the release, and the one timestamp every write gets.
	facts, err := inspectBase(baseImg.Path)
	if err != nil {
		return nil, err
	}
	rel, stamp := facts.release, facts.stamp
	if err := checkBase(rel); err != nil {
		return nil, fmt.Errorf("base image %s: %w", baseImg.Path, err)
	}
	if rel.Style == diskimg.StyleBooted {
		opt.Logf("warning: the base image's cmdline.txt has neither first-boot marker (init=…firstboot or resize): it may have booted before; its root partition will not grow on first boot")
	}

	known, err := baseRangeSums(ctx, opt.Base.Cache, baseImg)
	if err != nil {
		return nil, err
	}

	// The output directory appears only once there is something to build.
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}

	// 3. The cluster token: the recipe's, or one kept in the output directory.
	token := r.Cluster.Token.Reveal()
	if token == "" {
		if token, err = ClusterToken(outDir); err != nil {
			return nil, err
		}
	}

	// 4. Each node: clone the base, write its payload, verify, publish.
	prev := readManifest(outDir)
	jobs := make(chan int)
	results := make([]NodeResult, len(nodes))
	failures := make([]error, len(nodes))
	entries := make([]manifestNode, len(nodes))
	var wg sync.WaitGroup
	for w := 0; w < min(opt.Jobs, len(nodes)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				n := nodes[i]
				nb := nodeBuild{
					node: n, cluster: &r.Cluster, outDir: outDir, base: baseImg, release: rel,
					stamp: stamp, token: token, version: opt.Version, compress: compress,
					force: opt.Force, prev: prev.find(n.Hostname), logf: opt.Logf, known: known,
					editSpan: facts.editSpan,
				}
				res, entry, err := nb.run(ctx)
				if err != nil {
					failures[i] = fmt.Errorf("node %s: %w", n.Hostname, describeWriteError(outDir, err))
					opt.Logf("%s: FAILED: %v", n.Hostname, err)
					continue
				}
				results[i], entries[i] = res, entry
			}
		}()
	}
feed:
	for i := range nodes {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// 5. Checksums and manifest, for every node built now or before.
	var failed []string
	var errs []string
	for i, err := range failures {
		if err != nil {
			failed = append(failed, nodes[i].Hostname)
			errs = append(errs, err.Error())
		}
	}
	m := manifest{
		PibakeVersion: opt.Version,
		Cluster:       r.Cluster.Name,
		RecipeHash:    recipeHash(r),
		Base: manifestBase{Source: baseImg.Source, FinalURL: baseImg.FinalURL, SHA256: baseImg.SHA256,
			Style: rel.Style, OSRelease: rel.PrettyName},
	}
	built := map[string]bool{}
	for i := range nodes {
		if failures[i] == nil {
			m.Nodes = append(m.Nodes, entries[i])
			built[nodes[i].Hostname] = true
		}
	}
	// Nodes not built this time keep their entries while their images
	// are still there.
	for _, e := range prev.Nodes {
		if !built[e.Hostname] && !contains(failed, e.Hostname) && nodeInRecipe(r, e.Hostname) && exists(filepath.Join(outDir, e.File)) {
			m.Nodes = append(m.Nodes, e)
		}
	}
	sort.Slice(m.Nodes, func(i, j int) bool { return m.Nodes[i].Hostname < m.Nodes[j].Hostname })
	if err := writeOutputs(outDir, m); err != nil {
		return nil, err
	}

	var out []NodeResult
	for i := range nodes {
		if failures[i] == nil {
			out = append(out, results[i])
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%d of %d nodes failed (%s):\n  %s", len(errs), len(nodes), strings.Join(failed, ", "), strings.Join(errs, "\n  "))
	}
	return out, nil
}

func selectNodes(r *recipes.Recipe, names []string) ([]*recipes.Node, error) {
	if len(names) == 0 {
		nodes := make([]*recipes.Node, len(r.Nodes))
		for i := range r.Nodes {
			nodes[i] = &r.Nodes[i]
		}
		return nodes, nil
	}
	var nodes []*recipes.Node
	for _, name := range names {
		found := false
		for i := range r.Nodes {
			if strings.EqualFold(r.Nodes[i].Hostname, name) {
				nodes = append(nodes, &r.Nodes[i])
				found = true
				break
			}
		}
		if !found {
			var valid []string
			for _, n := range r.Nodes {
				valid = append(valid, n.Hostname)
			}
			return nil, fmt.Errorf("%w %q; the recipe's nodes are: %s", ErrUnknownNode, name, strings.Join(valid, ", "))
		}
	}
	return nodes, nil
}

func nodeInRecipe(r *recipes.Recipe, host string) bool {
	for _, n := range r.Nodes {
		if n.Hostname == host {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// checkBase refuses a base image that cannot boot or that was already set
// up for some machine: its settings (Wi-Fi key, SSH keys, static address,
// user) would leak into every node.
func checkBase(rel diskimg.Release) error {
	if err := rel.Bootable(); err != nil {
		return err
	}
	if len(rel.Customised) > 0 {
		return fmt.Errorf("it was already customised for a machine (%s); build from an unmodified Raspberry Pi OS image (pibake fetch, or the .img.xz as downloaded), never from a card or image that Raspberry Pi Imager or pibake has written",
			strings.Join(rel.Customised, "; "))
	}
	return nil
}

// firstbootBase is what decides how a payload is activated on rel.
func firstbootBase(rel diskimg.Release) firstboot.Base {
	return firstboot.Base{CloudInit: rel.CloudInit, SystemdFirstBoot: rel.MachineID == diskimg.MachineIDUninitialized}
}

// baseFacts is what every node's build needs to know about the base image.
type baseFacts struct {
	release diskimg.Release
	stamp   time.Time // the one timestamp every write gets
	// editSpan is how much of the image, from the start, editing a
	// node's image reads or writes: the partition table, the boot
	// partition and the root file system's superblock (which
	// diskimg.Open checks).
	editSpan int64
}

// inspectBase reads the release and picks the timestamp for every entry
// written: SOURCE_DATE_EPOCH when set, else the base image's newest
// timestamp, so the output never depends on the clock.
func inspectBase(path string) (baseFacts, error) {
	im, err := diskimg.Open(path, false)
	if err != nil {
		return baseFacts{}, fmt.Errorf("base image: %w", err)
	}
	defer im.Close()
	boot, root := im.BootPartition(), im.RootPartition()
	facts := baseFacts{editSpan: max(boot.Offset()+boot.Size(), root.Offset()+4096)}
	if facts.release, err = im.DetectRelease(); err != nil {
		return facts, fmt.Errorf("base image %s: %w", path, err)
	}
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		sec, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return facts, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", v)
		}
		facts.stamp = time.Unix(sec, 0).UTC()
		return facts, nil
	}
	if facts.stamp, err = im.NewestBootTime(); err != nil {
		return facts, fmt.Errorf("base image %s: %w", path, err)
	}
	return facts, nil
}

// nodeBuild builds one node's image.
type nodeBuild struct {
	node     *recipes.Node
	cluster  *recipes.Cluster
	outDir   string
	base     *base.Image
	release  diskimg.Release
	stamp    time.Time
	token    string
	version  string
	compress bool
	force    bool
	prev     *manifestNode
	logf     func(string, ...any)
	known    rangeSums // block-range sums of the base outside its boot partition
	editSpan int64     // the start of the image that editing reads or writes (baseFacts)
}

func (b *nodeBuild) run(ctx context.Context) (NodeResult, manifestNode, error) {
	n := b.node
	host := n.Hostname
	payload, inputs, err := b.payload()
	if err != nil {
		return NodeResult{}, manifestNode{}, err
	}
	img := filepath.Join(b.outDir, host+".img")
	res := NodeResult{Hostname: host, Role: string(n.Role), File: img}
	entry := manifestNode{
		Hostname: host, Role: string(n.Role), IP: "dhcp", Joins: n.JoinURL, ClusterInit: n.ClusterInit,
		Method: payload.Method, File: host + ".img", Bmap: host + ".img.bmap", Inputs: inputs,
	}
	if n.Address.IsValid() {
		entry.IP = n.Address.String()
	}
	if b.compress {
		entry.XZ = host + ".img.xz"
		res.XZ = filepath.Join(b.outDir, entry.XZ)
	}

	// 5. Unchanged inputs and an intact image: nothing to do.
	if !b.force && b.prev != nil && b.prev.Inputs == inputs && b.upToDate(ctx, *b.prev) {
		b.logf("%s: unchanged, skipped (use --force to rebuild)", host)
		prev := *b.prev
		res.Size, res.SHA256, res.Skipped = prev.Size, prev.SHA256, true
		return res, prev, nil
	}

	start := time.Now()
	part := img + ".part"
	os.Remove(part) // left by a build that was killed
	defer os.Remove(part)
	sum, size, method, err := b.writeImage(ctx, part, payload)
	if err != nil {
		return NodeResult{}, manifestNode{}, err
	}
	b.logf("%s: written and verified (%s)", host, method)

	// Block map and .xz are made from the .part file, and the image gets
	// its final name last: an interrupted build leaves nothing that looks
	// finished.
	bmap, err := bmapFor(part, b.known, nil)
	if err != nil {
		return NodeResult{}, manifestNode{}, fmt.Errorf("block map: %w", err)
	}
	entry.SHA256, entry.Size = sum, size
	res.SHA256, res.Size = sum, size
	xzPart := res.XZ + ".part"
	if b.compress {
		defer os.Remove(xzPart)
		b.logf("%s: compressing", host)
		if err := compressXZ(ctx, part, xzPart, 0); err != nil {
			return NodeResult{}, manifestNode{}, fmt.Errorf("compress: %w", err)
		}
		if err := atomicfile.Sync(xzPart); err != nil {
			return NodeResult{}, manifestNode{}, err
		}
		if entry.XZSHA256, _, err = fileSum(ctx, xzPart); err != nil {
			return NodeResult{}, manifestNode{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return NodeResult{}, manifestNode{}, err
	}
	if err := atomicfile.WriteFile(img+".bmap", bmap, 0o644); err != nil {
		return NodeResult{}, manifestNode{}, err
	}
	if b.compress {
		if err := os.Rename(xzPart, res.XZ); err != nil {
			return NodeResult{}, manifestNode{}, err
		}
	}
	if err := os.Rename(part, img); err != nil {
		return NodeResult{}, manifestNode{}, err
	}
	b.logf("%s: done in %s, sha256 %s…", host, time.Since(start).Round(10*time.Millisecond), sum[:12])
	return res, entry, nil
}

// writeImage makes the node's image at part: a clone of the base with the
// payload written to its boot partition, read back, synced to disk; and
// returns its SHA-256. The start of the image, up to the end of the boot
// partition, is cloned and edited first; then the rest is copied and
// synced while the checksum runs, reading what was copied from the base:
// the sync waits on the disk, the checksum on the CPU, each about a second
// for a 1.5 GiB image.
func (b *nodeBuild) writeImage(ctx context.Context, part string, payload firstboot.Payload) (string, int64, cloneMethod, error) {
	c, err := startClone(part, b.base.Path)
	if err != nil {
		return "", 0, "", fmt.Errorf("copy base image: %w", err)
	}
	if err := c.copyRange(ctx, 0, b.editSpan); err != nil {
		c.abort()
		return "", 0, "", fmt.Errorf("copy base image: %w", err)
	}
	edit := diskimg.Edit{CmdlineAdd: payload.CmdlineAdd, Time: b.stamp}
	for _, f := range payload.Files {
		edit.Files = append(edit.Files, diskimg.File{Path: f.Path, Data: f.Data, Source: f.Source})
	}
	if err := applyEdit(part, edit); err != nil {
		c.abort()
		return "", 0, "", err
	}
	if err := verify(part, edit); err != nil {
		c.abort()
		return "", 0, "", fmt.Errorf("verify %s: %w", part, err)
	}

	copied := make(chan error, 1)
	go func() {
		err := c.copyRange(ctx, b.editSpan, c.size)
		if err != nil {
			c.abort()
			copied <- fmt.Errorf("copy base image: %w", err)
			return
		}
		copied <- c.finish()
	}()
	sum, err := splitSum(ctx, part, b.base.Path, b.editSpan, c.size)
	if cerr := <-copied; cerr != nil {
		err = cerr
	}
	return sum, c.size, c.method, err
}

// splitSum is the SHA-256 of [0, split) of head followed by [split, size)
// of tail.
func splitSum(ctx context.Context, head, tail string, split, size int64) (string, error) {
	h := sha256.New()
	for _, part := range []struct {
		path     string
		from, to int64
	}{{head, 0, split}, {tail, split, size}} {
		f, err := os.Open(part.path)
		if err != nil {
			return "", err
		}
		err = hashRange(ctx, h, f, part.from, part.to)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// payload renders the node's first-boot files. Its inputs hash (base
// image, pibake version, every payload byte) is also its build id: it
// names the cloud-init instance and decides whether a rebuild is needed.
func (b *nodeBuild) payload() (firstboot.Payload, string, error) {
	opt := firstboot.Options{Token: b.token, Base: firstbootBase(b.release)}
	p, err := firstboot.Render(b.cluster, b.node, opt)
	if err != nil {
		return p, "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "pibake %s\nbase %s\nmethod %s\ncmdline %s\n", b.version, b.base.SHA256, p.Method, strings.Join(p.CmdlineAdd, " "))
	for _, f := range p.Files {
		fmt.Fprintf(h, "file %s %o %d\n", f.Path, f.Mode, len(f.Data))
		h.Write(f.Data)
		if f.Source != "" {
			sum, _, err := fileSum(context.Background(), f.Source)
			if err != nil {
				return p, "", fmt.Errorf("air-gap file: %w", err)
			}
			fmt.Fprintf(h, "source %s\n", sum)
		}
	}
	inputs := hex.EncodeToString(h.Sum(nil))
	opt.BuildID = inputs[:16]
	p, err = firstboot.Render(b.cluster, b.node, opt)
	return p, inputs, err
}

// upToDate checks that an earlier build's outputs are all there and the
// image still has its recorded checksum.
func (b *nodeBuild) upToDate(ctx context.Context, prev manifestNode) bool {
	img := filepath.Join(b.outDir, prev.File)
	if !exists(img+".bmap") || (b.compress && (prev.XZ == "" || !exists(filepath.Join(b.outDir, prev.XZ)))) {
		return false
	}
	sum, _, err := fileSum(ctx, img)
	return err == nil && sum == prev.SHA256
}

func applyEdit(path string, e diskimg.Edit) error {
	im, err := diskimg.Open(path, true)
	if err != nil {
		return err
	}
	if err := im.Apply(e); err != nil {
		im.Close()
		return err
	}
	return im.CloseUnsynced() // writeImage syncs the whole image
}

// verify reads back every file written and the command line.
func verify(path string, e diskimg.Edit) error {
	im, err := diskimg.Open(path, false)
	if err != nil {
		return err
	}
	defer im.Close()
	for _, f := range e.Files {
		got, err := im.ReadBootFile(f.Path)
		if err != nil {
			return err
		}
		want := f.Data
		if f.Source != "" {
			if want, err = os.ReadFile(f.Source); err != nil {
				return err
			}
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s reads back different from what was written", f.Path)
		}
	}
	cmdline, err := im.ReadBootFile("cmdline.txt")
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, a := range strings.Fields(string(cmdline)) {
		have[a] = true
	}
	for _, a := range e.CmdlineAdd {
		if !have[a] {
			return fmt.Errorf("cmdline.txt lacks %s", a)
		}
	}
	return nil
}

// fileSum hashes a file, stopping when ctx is cancelled.
func fileSum(ctx context.Context, p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	if err := hashRange(ctx, h, f, 0, fi.Size()); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), fi.Size(), nil
}

// hashRange feeds [from, to) of f to h. Holes are hashed from a zero
// buffer instead of being read: an image is mostly holes.
func hashRange(ctx context.Context, h hash.Hash, f *os.File, from, to int64) error {
	buf := make([]byte, 1<<20)
	zero := make([]byte, 1<<20)
	hashZeros := func(n int64) {
		for n > 0 {
			k := min(n, int64(len(zero)))
			h.Write(zero[:k])
			n -= k
		}
	}
	pos := from
	for _, e := range sparse.Extents(f, from, to-from) {
		hashZeros(e[0] - pos)
		for p := e[0]; p < e[1]; {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := min(e[1]-p, int64(len(buf)))
			if _, err := f.ReadAt(buf[:k], p); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			h.Write(buf[:k])
			p += k
		}
		pos = e[1]
	}
	hashZeros(to - pos)
	return ctx.Err()
}

// recipeHash identifies the resolved recipe, secrets included (hashed,
// never shown), so the manifest changes when any input does.
func recipeHash(r *recipes.Recipe) string {
	h := sha256.New()
	plan := recipes.NewPlan(r)
	plan.Output.Dir = "" // where the images go is not what they are
	json.NewEncoder(h).Encode(plan)
	fmt.Fprintf(h, "token %s\nagent %s\n", r.Cluster.Token.Reveal(), r.Cluster.AgentToken.Reveal())
	for _, n := range r.Nodes {
		if n.User != nil {
			fmt.Fprintf(h, "user %s %s\n", n.Hostname, n.User.PasswordHash.Reveal())
		}
		if n.WiFi != nil {
			fmt.Fprintf(h, "wifi %s %s\n", n.Hostname, n.WiFi.PSK.Reveal())
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
