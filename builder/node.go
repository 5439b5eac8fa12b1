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
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/internal/atomicfile"
	"github.com/pibake/pibake/internal/configtxt"
	"github.com/pibake/pibake/internal/progress"
	"github.com/pibake/pibake/internal/sparse"
	"github.com/pibake/pibake/recipes"
)

// nodeBuild builds one node's image.
type nodeBuild struct {
	*build
	node *recipes.Node
	base *baseFacts
	out  *output
}

// run builds the node (or finds it unchanged) and publishes it. Failures
// are in the result: one node's failure does not stop the others.
func (nb *nodeBuild) run(ctx context.Context) NodeResult {
	n := nb.node
	res := NodeResult{Hostname: n.Hostname, Role: string(n.Role)}
	if err := ctx.Err(); err != nil {
		res.Status, res.Err = StatusFailed, err
		return res
	}
	entry, unchanged, err := nb.build1(ctx)
	if err != nil {
		res.Status, res.Err = StatusFailed, describeWriteError(nb.outDir, err)
		if !errors.Is(err, context.Canceled) {
			nb.logf("%s: FAILED: %v", n.Hostname, res.Err)
		}
		return res
	}
	res.Status = StatusBuilt
	if unchanged {
		res.Status = StatusUnchanged
	}
	res.File, res.Size, res.SHA256 = filepath.Join(nb.outDir, entry.File), entry.Size, entry.SHA256
	if entry.XZ != "" {
		res.XZ = filepath.Join(nb.outDir, entry.XZ)
	}
	return res
}

// build1 makes the node's files under temporary names and publishes them,
// or leaves an unchanged node as it is (unchanged is then true).
func (nb *nodeBuild) build1(ctx context.Context) (entry manifestNode, unchanged bool, err error) {
	n := nb.node
	host := n.Hostname
	method, err := firstboot.ChooseMethod(n.Firstboot.Method, firstbootBase(nb.base.release))
	if err != nil {
		return manifestNode{}, false, err
	}
	inputs, err := nb.inputs(nb.base, *n)
	if err != nil {
		return manifestNode{}, false, err
	}
	img, bmapName, _ := nodeFiles(host)
	entry = manifestNode{
		Hostname: host, Role: string(n.Role), State: StateCurrent, IP: "dhcp", Joins: n.JoinURL, ClusterInit: n.ClusterInit,
		Method: method, File: img, Bmap: bmapName, Inputs: inputs, Released: nb.base.stamp.UTC().Format(time.DateOnly),
	}
	if n.Address.IsValid() {
		entry.IP = n.Address.String()
	}
	if opt := nb.payloadOptions(nb.base, n, ""); len(opt.CAFiles) > 0 {
		entry.CA = firstboot.CACarries
	} else if opt.CAHash != "" {
		entry.CA = firstboot.CAPins
	}

	// Unchanged inputs and an intact image: nothing to do, but a .img.xz
	// that was not asked for this time goes (it describes this image only
	// while nobody rebuilds it).
	if prev, ok := nb.out.entry(host); !nb.opt.Force && ok && prev.Inputs == inputs && (prev.XZ != "" || !nb.compress) && nb.upToDate(ctx, prev) {
		if !nb.compress && prev.XZ != "" {
			if err := nb.out.dropXZ(host); err != nil {
				return manifestNode{}, false, err
			}
			prev, _ = nb.out.entry(host)
		}
		nb.logf("%s: unchanged, skipped (use --force to rebuild)", host)
		return prev, true, nil
	}

	payload, err := nb.render(nb.base, n, inputs)
	if err != nil {
		return manifestNode{}, false, err
	}
	start := time.Now()
	pub := publication{Entry: entry, Parts: map[string]part{}}
	defer func() {
		for _, pt := range pub.Parts {
			os.Remove(nb.out.path(pt.Temp)) // a no-op once published
		}
	}()
	if err := nb.makeParts(ctx, payload, &pub); err != nil {
		return manifestNode{}, false, err
	}
	// Past this point the node is published whole, even on an interrupt:
	// its files are complete.
	if err := ctx.Err(); err != nil {
		return manifestNode{}, false, err
	}
	if err := nb.out.publish(pub); err != nil {
		return manifestNode{}, false, err
	}
	nb.logf("%s: done in %s, sha256 %s…", host, time.Since(start).Round(10*time.Millisecond), pub.Entry.SHA256[:12])
	nb.opt.Event(host, StagePublished)
	return pub.Entry, false, nil
}

// render is node n's payload, for inputs (n's inputs hash): what build
// writes to the node's image and flash to its device, one code path.
func (b *build) render(facts *baseFacts, n *recipes.Node, inputs string) (firstboot.Payload, error) {
	return firstboot.Render(&b.r.Cluster, n, b.payloadOptions(facts, n, inputs[:16]))
}

// payloadOptions are the inputs of node n's payload that are not in the
// recipe.
func (b *build) payloadOptions(facts *baseFacts, n *recipes.Node, buildID string) firstboot.Options {
	opt := firstboot.Options{Token: b.token, BuildID: buildID, Base: firstbootBase(facts.release)}
	b.nodeIdentity(n, &opt)
	if buildID != "" {
		opt.ReportKey = b.nodeReportKey(n, buildID)
	}
	return opt
}

// makeParts writes the node's image, block map and (when compressing)
// .img.xz under temporary names, recording each in pub as it goes so that
// the caller removes whatever exists if a later step fails.
func (nb *nodeBuild) makeParts(ctx context.Context, payload firstboot.Payload, pub *publication) error {
	host := nb.node.Hostname
	img, bmapName, xzName := nodeFiles(host)
	imgPart := img + ".part"
	pub.Parts[img] = part{Temp: imgPart}
	sum, size, how, err := nb.writeImage(ctx, nb.out.path(imgPart), payload)
	if err != nil {
		return err
	}
	pub.Entry.SHA256, pub.Entry.Size = sum, size
	pub.Parts[img] = part{Temp: imgPart, SHA256: sum}
	nb.logf("%s: written and verified (%s)", host, how)
	nb.opt.Event(host, StageWritten)

	bmap, err := bmapFor(nb.out.path(imgPart), nb.base.known, nil)
	if err != nil {
		return fmt.Errorf("block map: %w", err)
	}
	bmapSum := sha256.Sum256(bmap)
	pub.Parts[bmapName] = part{Temp: bmapName + ".part", SHA256: hex.EncodeToString(bmapSum[:])}
	if err := atomicfile.WriteSynced(nb.out.path(bmapName+".part"), bmap, 0o644); err != nil {
		return fmt.Errorf("block map: %w", err)
	}
	if !nb.compress {
		return nil
	}
	nb.logf("%s: compressing", host)
	xzPart := xzName + ".part"
	pub.Parts[xzName] = part{Temp: xzPart}
	if err := compressNodeXZ(ctx, nb.out.path(imgPart), nb.out.path(xzPart), nb.base.xz, nb.base.img.Path, nb.base.editSpan, nb.opt.Jobs,
		progress.New(nb.opt.Progress, host+": xz", pub.Entry.Size)); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	if err := atomicfile.Sync(nb.out.path(xzPart)); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	xzSum, xzSize, err := fileSum(ctx, nb.out.path(xzPart))
	if err != nil {
		return err
	}
	pub.Entry.XZ, pub.Entry.XZSHA256, pub.Entry.XZSize = xzName, xzSum, xzSize
	pub.Parts[xzName] = part{Temp: xzPart, SHA256: xzSum}
	return nil
}

// inputs hashes everything node n's image is made from, once, from
// canonical inputs: pibake's version and fixed scripts, the base image and
// the one timestamp every write gets, the cluster and the node as resolved
// (secrets included, only ever hashed), the token and the air-gap files'
// contents. Its first 16 hex digits are the node's build id, which names
// its cloud-init instance; an unchanged hash with an intact image means
// the node need not be built again.
func (b *build) inputs(facts *baseFacts, n recipes.Node) (string, error) {
	method, err := firstboot.ChooseMethod(n.Firstboot.Method, firstbootBase(facts.release))
	if err != nil {
		return "", err
	}
	c := b.r.Cluster
	c.Airgap = nil // its files count by content, below, not by where they are
	h := keyedHash(b.nodeKey(n))
	fmt.Fprintf(h, "pibake %s\nscripts %s\nbase %s\nstamp %d\nmethod %s\n", b.opt.Version, firstboot.Fingerprint(), facts.img.SHA256, facts.stamp.Unix(), method)
	enc := json.NewEncoder(h)
	enc.Encode(c)
	enc.Encode(n)
	fmt.Fprintf(h, "token %q\nagent-token %q\n", b.token, c.AgentToken.Reveal())
	id := b.payloadOptions(facts, &n, "")
	fmt.Fprintf(h, "join-token %q\nca %s\nnode-password %q\n", id.JoinToken, id.CAHash, id.NodePassword)
	for _, name := range slices.Sorted(maps.Keys(id.CAFiles)) {
		fmt.Fprintf(h, "ca-file %s %x\n", name, sha256.Sum256(id.CAFiles[name]))
	}
	if n.User != nil {
		fmt.Fprintf(h, "password %q\n", n.User.PasswordHash.Reveal())
	}
	if n.WiFi != nil {
		fmt.Fprintf(h, "psk %q\n", n.WiFi.PSK.Reveal())
	}
	if n.ReportURL != "" {
		fmt.Fprintf(h, "report-key %x\n", sha256.Sum256(b.reportKey))
	}
	for _, p := range []string{"k3s", "images", "install"} {
		var path string
		if a := b.r.Cluster.Airgap; a != nil {
			path = map[string]string{"k3s": a.K3sBinary, "images": a.Images, "install": a.InstallScript}[p]
		}
		fmt.Fprintf(h, "airgap %s %s %s\n", p, filepath.Base(path), facts.airgap[path])
	}
	return hexSum(h), nil
}

// writeImage makes the node's image at part: a clone of the base with the
// payload written to its boot partition, read back, synced to disk; and
// returns its SHA-256. The start of the image, up to the end of the boot
// partition, is cloned and edited first; then the rest is copied and
// synced while the checksum runs, reading what was copied from the base:
// the sync waits on the disk, the checksum on the CPU, each about a second
// for a 1.5 GiB image.
func (nb *nodeBuild) writeImage(ctx context.Context, part string, payload firstboot.Payload) (string, int64, cloneMethod, error) {
	c, err := startHead(ctx, part, nb.base, payload)
	if err != nil {
		return "", 0, "", err
	}

	copied := make(chan error, 1)
	go func() {
		err := c.copyRange(ctx, nb.base.editSpan, c.size)
		if err != nil {
			c.abort()
			copied <- fmt.Errorf("copy base image: %w", err)
			return
		}
		copied <- c.finish()
	}()
	sum, err := splitSum(ctx, part, nb.base.img.Path, nb.base.editSpan, c.size, progress.New(nb.opt.Progress, nb.node.Hostname+": image", c.size))
	if cerr := <-copied; cerr != nil {
		err = cerr
	}
	return sum, c.size, c.method, err
}

// startHead starts a node's image at part as a clone of the base (as
// large, sparse) whose first editSpan bytes are copied, edited with the
// payload and read back; past editSpan the clone is the caller's to
// finish (build copies the rest; flash reads the rest from the base).
func startHead(ctx context.Context, part string, facts *baseFacts, payload firstboot.Payload) (*imageClone, error) {
	c, err := startClone(part, facts.img.Path)
	if err != nil {
		return nil, fmt.Errorf("copy base image: %w", err)
	}
	if err := c.copyRange(ctx, 0, facts.editSpan); err != nil {
		c.abort()
		return nil, fmt.Errorf("copy base image: %w", err)
	}
	edit := diskimg.Edit{CmdlineAdd: payload.CmdlineAdd, ConfigTxt: payload.ConfigTxt, Time: facts.stamp}
	for _, f := range payload.Files {
		edit.Files = append(edit.Files, diskimg.File{Path: f.Path, Data: f.Data, Source: f.Source})
	}
	if err := applyEdit(part, edit); err != nil {
		c.abort()
		return nil, err
	}
	if err := verify(part, edit); err != nil {
		c.abort()
		return nil, fmt.Errorf("verify %s: %w", part, err)
	}
	return c, nil
}

// splitSum is the SHA-256 of [0, split) of head followed by [split, size)
// of tail.
func splitSum(ctx context.Context, head, tail string, split, size int64, done *progress.Counter) (string, error) {
	h := countingHash{Hash: sha256.New(), done: done}
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
	done.Finish()
	return hex.EncodeToString(h.Sum(nil)), nil
}

// countingHash counts what it hashes, for a progress display.
type countingHash struct {
	hash.Hash
	done *progress.Counter
}

func (h countingHash) Write(p []byte) (int, error) {
	h.done.Add(int64(len(p)))
	return h.Hash.Write(p)
}

// upToDate checks that an earlier build's outputs are all there and the
// image still has its recorded checksum.
func (nb *nodeBuild) upToDate(ctx context.Context, prev manifestNode) bool {
	if !exists(nb.out.path(prev.Bmap)) || (prev.XZ != "" && !exists(nb.out.path(prev.XZ))) {
		return false
	}
	sum, _, err := fileSum(ctx, nb.out.path(prev.File))
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
	if e.ConfigTxt != nil {
		cfg, err := im.ReadBootFile("config.txt")
		if err != nil {
			return err
		}
		if block, _, err := configtxt.Block(cfg); err != nil || !slices.Equal(block, e.ConfigTxt) {
			return fmt.Errorf("config.txt: pibake's block reads back as %q, not what was written (%v)", block, err)
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
// buffer instead of being read: an image is mostly holes. A file shorter
// than to is an error, not a silently shorter hash.
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
			if _, err := f.ReadAt(buf[:k], p); err != nil {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("%s ends at byte %d, before %d: %w", f.Name(), p, to, io.ErrUnexpectedEOF)
				}
				return err
			}
			h.Write(buf[:k])
			p += k
		}
		pos = e[1]
	}
	if fi, err := f.Stat(); err == nil && fi.Size() < to {
		return fmt.Errorf("%s is %d bytes, shorter than %d: %w", f.Name(), fi.Size(), to, io.ErrUnexpectedEOF)
	}
	hashZeros(to - pos)
	return ctx.Err()
}

// recipeHash identifies the resolved recipe, secrets included (under the
// build's secret key, never shown), so the manifest changes when any
// input does.
func (b *build) recipeHash() string {
	r := b.r
	h := keyedHash(b.recipeKey())
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
	return hexSum(h)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
