package builder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2/hclparse"
	"golang.org/x/sync/errgroup"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/testimage"
	"github.com/pibake/pibake/internal/xztest"
	"github.com/pibake/pibake/recipes"
)

const testToken = buildtest.Token

// xzBlockBytes cuts an .xz file's bytes into its blocks, each as it is
// stored (header, data, padding, check): what a reused block looks like
// inside a node's .img.xz.
func xzBlockBytes(t *testing.T, xzData []byte) [][]byte {
	t.Helper()
	blocks, _, err := base.XZBlocks(bytes.NewReader(xzData), int64(len(xzData)))
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(blocks))
	for i, b := range blocks {
		out[i] = xzData[b.Offset : b.Offset+b.Padded()]
	}
	return out
}

// logRecorder keeps what a build logs; Logf is called from every node's
// goroutine.
type logRecorder struct {
	mu  sync.Mutex
	all []string
}

func (l *logRecorder) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, fmt.Sprintf(format, args...))
}

func (l *logRecorder) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

// recipeFor writes a two-node recipe whose image is the server's _latest.
func recipeFor(t *testing.T, s *buildtest.ReleaseServer, extra string) *recipes.Recipe {
	t.Helper()
	src := fmt.Sprintf(`
image {
  source = "%s/latest"
  %s
}
cluster {
  token = "%s"
}
node "srv" {
  role = "server"
  ip   = "192.168.7.10/24"
  ssh  = true
  user {
    name                = "ops"
    ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn4lC6ZnWsLqtCQ8ki7SIqNvLZPc0xk1pB9uJZbAFkf ops@lab"]
  }
}
node "agent" {
  role = "agent"
}
`, s.URL, extra, testToken)
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

func buildOptions(t *testing.T, s *buildtest.ReleaseServer, cache string) Options {
	return Options{
		OutDir:  filepath.Join(t.TempDir(), "out"),
		Jobs:    2,
		Version: "test",
		Base:    base.Options{Cache: base.Cache{Dir: cache}, HTTPClient: s.Client(), RetryDelay: time.Millisecond},
	}
}

// TestBuildEndToEnd builds a server and an agent from a loopback URL and
// checks the images with the real tools.
func TestBuildEndToEnd(t *testing.T) {
	s := buildtest.NewReleaseServer(t)
	r := recipeFor(t, s, "")
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	results, err := Build(context.Background(), r, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("Build returned %d results", len(results))
	}
	spec := testimage.Bookworm()
	bootOff, bootSize := spec.BootStart*512, int64(testimage.BootSectors)*512
	rootOff := spec.RootStart() * 512
	for _, res := range results {
		img := res.File
		if fi, err := os.Stat(img); err != nil {
			t.Fatal(err)
		} else if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v; want 0600 (it holds the token)", img, fi.Mode().Perm())
		}
		testimage.FsckFAT(t, img, bootOff, bootSize)
		testimage.E2fsck(t, img, rootOff)
		cmdline := testimage.Mtype(t, img, bootOff, "cmdline.txt")
		if !strings.HasPrefix(cmdline, strings.TrimSpace(spec.Cmdline())+" cgroup_memory=1 cgroup_enable=memory") || strings.Count(cmdline, "\n") != 1 {
			t.Errorf("%s cmdline.txt = %q", res.Hostname, cmdline)
		}
		var node struct{ Hostname, Role string }
		json.Unmarshal([]byte(testimage.Mtype(t, img, bootOff, "pibake/node.json")), &node)
		if node.Hostname != res.Hostname || node.Role != res.Role {
			t.Errorf("%s: node.json says %+v", res.Hostname, node)
		}
		listing := testimage.Mdir(t, img, bootOff, "")
		if strings.Contains(listing, "::/ssh\n") != (res.Hostname == "srv") {
			t.Errorf("%s: ssh file present = %v; want it only on srv:\n%s", res.Hostname, !(res.Hostname == "srv"), listing)
		}
		cfg := testimage.Mtype(t, img, bootOff, "pibake/k3s-config.yaml")
		if !strings.Contains(cfg, testToken) {
			t.Errorf("%s: k3s config lacks the token", res.Hostname)
		}
		if !sameRange(t, img, s.Raw, rootOff, spec.Size()-rootOff) || !sameRange(t, img, s.Raw, 0, bootOff) {
			t.Errorf("%s: the root partition or the MBR differs from the base image", res.Hostname)
		}
		bmapCopy(t, img)
	}
	cmd := exec.Command("sha256sum", "-c", "SHA256SUMS")
	cmd.Dir = opt.OutDir
	if out, err := cmd.CombinedOutput(); err != nil || strings.Count(string(out), ": OK") != 8 { // 2 images, block maps and SBOMs; delta.json, provenance.json
		t.Errorf("sha256sum -c SHA256SUMS: %v\n%s", err, out)
	}
	var m outdir.Manifest
	b, _ := os.ReadFile(filepath.Join(opt.OutDir, "manifest.json"))
	if err := json.Unmarshal(b, &m); err != nil || len(m.Nodes) != 2 || m.Base.SHA256 != s.SHA() || m.Nodes[0].Hostname != "agent" ||
		m.Nodes[1].Joins != "" || m.Nodes[0].Joins != "https://192.168.7.10:6443" || m.Base.Style != diskimg.StyleBookworm {
		t.Errorf("manifest.json = %s (%v)", b, err)
	}
	if bytes.Contains(b, []byte(testToken)) {
		t.Error("manifest.json contains the token")
	}
}

// sameRange compares [off, off+n) of two files, both of which must hold
// the whole range.
func sameRange(t *testing.T, a, b string, off, n int64) bool {
	t.Helper()
	files := make([]*os.File, 2)
	for i, p := range []string{a, b} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err != nil || fi.Size() < off+n {
			t.Fatalf("%s is shorter than the range compared (%d+%d bytes): %v", p, off, n, err)
		}
		files[i] = f
	}
	ba, bb := make([]byte, 4<<20), make([]byte, 4<<20)
	for p := off; p < off+n; p += int64(len(ba)) {
		k := min(int64(len(ba)), off+n-p)
		if _, err := files[0].ReadAt(ba[:k], p); err != nil {
			t.Fatalf("read %s: %v", a, err)
		}
		if _, err := files[1].ReadAt(bb[:k], p); err != nil {
			t.Fatalf("read %s: %v", b, err)
		}
		if !bytes.Equal(ba[:k], bb[:k]) {
			return false
		}
	}
	return true
}

// bmapCopy flashes an image to a file with bmaptool, which verifies each
// range's checksum, and compares the result.
func bmapCopy(t *testing.T, img string) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "flashed.img")
	if out, err := testimage.Run(t, "bmaptool", "copy", "--bmap", img+".bmap", img, dst); err != nil {
		t.Errorf("bmaptool copy %s: %v\n%s", filepath.Base(img), err, out)
		return
	}
	fi, _ := os.Stat(img)
	if !sameRange(t, img, dst, 0, fi.Size()) {
		t.Errorf("bmaptool copy of %s differs from the image", filepath.Base(img))
	}
}

// TestBuildReproducibleAndCached builds twice into two directories, at
// different clocks and job counts: every output is byte-identical, and the
// second build makes no request and decompresses nothing.
func TestBuildReproducibleAndCached(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 2 s for the clock to move")
	}
	s := buildtest.NewSmallReleaseServer(t)
	r := recipeFor(t, s, "")
	cache := filepath.Join(t.TempDir(), "cache")
	first := buildOptions(t, s, cache)
	if _, err := Build(context.Background(), r, first); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond)
	before := s.Requests()
	second := buildOptions(t, s, cache)
	second.Jobs = 1
	var rec logRecorder
	second.Logf = rec.logf
	if _, err := Build(context.Background(), r, second); err != nil {
		t.Fatal(err)
	}
	logs := rec.lines()
	if n := s.Requests() - before; n != 0 {
		t.Errorf("the second build made %d requests; want 0", n)
	}
	if strings.Contains(strings.Join(logs, "\n"), "decompressing") {
		t.Error("the second build decompressed the base again")
	}
	for _, name := range []string{"srv.img", "agent.img", "srv.img.bmap", "agent.img.bmap", "SHA256SUMS", "manifest.json",
		"srv.cdx.json", "agent.cdx.json", "delta.json", "provenance.json"} {
		a, b := filepath.Join(first.OutDir, name), filepath.Join(second.OutDir, name)
		fa, _ := os.Stat(a)
		if fa == nil || !sameRange(t, a, b, 0, fa.Size()) {
			t.Errorf("%s differs between the two builds", name)
		}
	}
}

func TestBuildIncremental(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := recipeFor(t, s, "")
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	if _, err := Build(context.Background(), r, opt); err != nil {
		t.Fatal(err)
	}
	res, err := Build(context.Background(), r, opt)
	if err != nil || len(res) != 2 || res[0].Status != StatusUnchanged || res[1].Status != StatusUnchanged {
		t.Fatalf("rebuild = %+v, %v; want both unchanged", res, err)
	}
	opt.Force = true
	if res, err = Build(context.Background(), r, opt); err != nil || res[0].Status != StatusBuilt {
		t.Fatalf("--force rebuild = %+v, %v; want built", res, err)
	}
	// A damaged image is rebuilt.
	opt.Force = false
	f, _ := os.OpenFile(filepath.Join(opt.OutDir, "agent.img"), os.O_WRONLY, 0)
	f.WriteAt([]byte("damage"), 1<<20)
	f.Close()
	res, err = Build(context.Background(), r, opt)
	if err != nil || res[0].Hostname != "srv" || res[0].Status != StatusUnchanged || res[1].Status != StatusBuilt {
		t.Errorf("after damaging agent.img: %+v, %v; want srv unchanged, agent rebuilt", res, err)
	}
	// Another timestamp for every entry is another image.
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	res, err = Build(context.Background(), r, opt)
	if err != nil || res[0].Status != StatusBuilt || res[1].Status != StatusBuilt {
		t.Errorf("after SOURCE_DATE_EPOCH changed: %+v, %v; want both rebuilt", res, err)
	}
}

func TestBuildWrongPinBuildsNothing(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := recipeFor(t, s, fmt.Sprintf("sha256 = %q", strings.Repeat("ab", 32)))
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	_, err := Build(context.Background(), r, opt)
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") || !strings.HasSuffix(err.Error(), "; nothing was built") {
		t.Fatalf("Build with a wrong pin = %v", err)
	}
	if imgs, _ := filepath.Glob(filepath.Join(opt.OutDir, "*.img*")); len(imgs) != 0 {
		t.Errorf("a refused build wrote %v", imgs)
	}
}

// TestBuildInterrupted cancels a build while it writes: no file under a
// final name and no .part file is left, and every node is reported
// interrupted (not failed). Interrupted again after a recipe change, the
// images from before stay published, checked by sha256sum -c, and the
// results name them.
func TestBuildInterrupted(t *testing.T) {
	testimage.Tool(t, "sha256sum")
	s := buildtest.NewSmallReleaseServer(t)
	r := recipeFor(t, s, "")
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	interrupted := func(r *recipes.Recipe) []NodeResult {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		o := opt
		o.Event = func(_ string, stage NodeStage) {
			if stage == StageWritten {
				cancel() // as SIGINT does, while a node is being written
			}
		}
		o.Jobs = 1
		res, err := Build(ctx, r, o)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted Build = %v; want context.Canceled", err)
		}
		for _, n := range res {
			if n.Status != StatusInterrupted {
				t.Errorf("%s: status %s (%v); want interrupted", n.Hostname, n.Status, n.Err)
			}
		}
		return res
	}
	for _, n := range interrupted(r) {
		if n.File != "" {
			t.Errorf("%s: an interrupted first build names %s", n.Hostname, n.File)
		}
	}
	left, _ := filepath.Glob(filepath.Join(opt.OutDir, "*.img*"))
	if len(left) != 0 {
		t.Errorf("an interrupted build left %v", left)
	}

	before, err := Build(context.Background(), r, opt)
	if err != nil {
		t.Fatal(err)
	}
	r.Nodes[0].Labels = map[string]string{"changed": "yes"}
	r.Nodes[1].Labels = map[string]string{"changed": "yes"}
	for i, n := range interrupted(r) {
		if n.File != before[i].File || n.SHA256 != before[i].SHA256 || !files.Exists(n.File) {
			t.Errorf("%s: interrupted rebuild names %q (%s); want the image from before, %q (%s)", n.Hostname, n.File, n.SHA256, before[i].File, before[i].SHA256)
		}
	}
	cmd := exec.Command("sha256sum", "-c", "SHA256SUMS")
	cmd.Dir = opt.OutDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c after an interrupted rebuild: %v\n%s", err, out)
	}
}

func TestBuildFailedNodeDoesNotStopOthers(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := recipeFor(t, s, "")
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	// agent.img as a non-empty directory cannot be replaced.
	os.MkdirAll(filepath.Join(opt.OutDir, "agent.img", "x"), 0o755)
	res, err := Build(context.Background(), r, opt)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 nodes failed (agent)") {
		t.Fatalf("Build = %v; want agent named as failed", err)
	}
	if len(res) != 2 || res[0].Hostname != "srv" || res[0].Status != StatusBuilt || res[1].Status != StatusFailed || res[1].Err == nil ||
		!files.Exists(filepath.Join(opt.OutDir, "srv.img")) {
		t.Errorf("results = %+v; want srv built and agent failed, with the reason", res)
	}
	if fi, err := os.Stat(filepath.Join(opt.OutDir, "agent.img")); err == nil && fi.Mode().IsRegular() {
		t.Error("the failed node has an image")
	}
	if left, _ := filepath.Glob(filepath.Join(opt.OutDir, "*.part")); len(left) != 0 {
		t.Errorf("the failed node left %v", left)
	}
	sums, _ := os.ReadFile(filepath.Join(opt.OutDir, "SHA256SUMS"))
	if strings.Contains(string(sums), "agent") || !strings.Contains(string(sums), "srv.img") {
		t.Errorf("SHA256SUMS = %q", sums)
	}
}

func TestBuildSelectNodes(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := recipeFor(t, s, "")
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	opt.Nodes = []string{"nope"}
	if _, err := Build(context.Background(), r, opt); !errors.Is(err, fleet.ErrUnknownNode) || !strings.Contains(err.Error(), "srv, agent") {
		t.Errorf("Build(--node nope) = %v; want the valid names listed", err)
	}
	opt.Nodes = []string{"agent"}
	res, err := Build(context.Background(), r, opt)
	if err != nil || len(res) != 1 || res[0].Hostname != "agent" || res[0].Status != StatusBuilt || files.Exists(filepath.Join(opt.OutDir, "srv.img")) {
		t.Errorf("Build(--node agent) = %+v, %v", res, err)
	}
}

func TestBuildCompress(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := recipeFor(t, s, "")
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	opt.Nodes = []string{"srv"}
	opt.Compress = true
	res, err := Build(context.Background(), r, opt)
	if err != nil {
		t.Fatal(err)
	}
	xzTool := testimage.Tool(t, "xz")
	list, err := exec.Command(xzTool, "--robot", "--list", res[0].XZ).Output()
	if err != nil || !strings.Contains(string(list), "\nfile\t1\t") {
		t.Fatalf("xz --list: %v\n%s", err, list)
	}
	var blocks int
	for _, line := range strings.Split(string(list), "\n") {
		if strings.HasPrefix(line, "file\t") {
			fmt.Sscanf(strings.Split(line, "\t")[2], "%d", &blocks)
		}
	}
	if blocks < 2 {
		t.Errorf("the .img.xz has %d blocks; want a multi-block stream", blocks)
	}
	dec := filepath.Join(t.TempDir(), "dec.img")
	out, _ := os.Create(dec)
	cmd := exec.Command(xzTool, "-T0", "-dc", res[0].XZ)
	cmd.Stdout = out
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	out.Close()
	fi, _ := os.Stat(res[0].File)
	if !sameRange(t, dec, res[0].File, 0, fi.Size()) {
		t.Error("xz -dc of the .img.xz differs from the image")
	}
	sums, _ := os.ReadFile(filepath.Join(opt.OutDir, "SHA256SUMS"))
	if !strings.Contains(string(sums), "srv.img.xz") {
		t.Errorf("SHA256SUMS lacks the .img.xz: %s", sums)
	}
}

// TestCompressReusesBaseBlocks: a node's .img.xz takes the base .xz's
// blocks past the boot partition verbatim (the same bytes, found in the
// base file) and compresses only what lies before; xz -t finds the stream
// sound and it decompresses to exactly the node's image, whatever the
// base's check type. A single-block or raw base gets a multi-block .xz of
// its own, made once and kept in the cache, whose blocks every node takes
// the same way.
func TestCompressReusesBaseBlocks(t *testing.T) {
	xzTool := testimage.Tool(t, "xz")
	spec := buildtest.SmallBookworm()
	raw := testimage.For(t, spec) // 152 MiB: 19 blocks of 8 MiB, block 17 the root's metadata, the rest zeros but block 0
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		xzArgs  []string
		reused  bool
		encoder string // PIBAKE_XZ: "" the system's xz, or "builtin"
	}{
		{name: "multi-block crc64", xzArgs: []string{"-T2", "-0", "--block-size=8MiB"}, reused: true},
		{name: "multi-block crc32", xzArgs: []string{"-T2", "-0", "--block-size=8MiB", "--check=crc32"}, reused: true},
		{name: "single block", xzArgs: []string{"-T1", "-0"}},
		{name: "raw"},
		{name: "raw, pibake's own compressor", encoder: "builtin"},
		{name: "multi-block, pibake's own compressor", xzArgs: []string{"-T2", "-0", "--block-size=8MiB"}, reused: true, encoder: "builtin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PIBAKE_XZ", map[string]string{"": xzTool}[tc.encoder]+tc.encoder)
			wantEncoder := "pibake"
			if tc.encoder == "" {
				v, _ := exec.Command(xzTool, "--version").Output()
				wantEncoder = "xz-" + strings.Fields(string(v))[3]
			}
			baseFile := raw
			var baseXZ []byte
			if tc.xzArgs != nil {
				var err error
				baseXZ, err = exec.Command(xzTool, append(tc.xzArgs, "-c", raw)...).Output()
				if err != nil {
					t.Fatal(err)
				}
				baseFile = filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".img.xz")
				os.WriteFile(baseFile, baseXZ, 0o600)
			}
			r := buildtest.LabRecipe(t, &buildtest.ReleaseServer{Server: &httptest.Server{URL: "file://unused"}}, buildtest.TwoNodes)
			opt := Options{OutDir: filepath.Join(t.TempDir(), "out"), Jobs: 2, Version: "test", Image: baseFile, Compress: true,
				Base: base.Options{Cache: base.Cache{Dir: filepath.Join(t.TempDir(), "cache")}}}
			var rec logRecorder
			opt.Logf = rec.logf
			res, err := Build(context.Background(), r, opt)
			if err != nil {
				t.Fatal(err)
			}
			logs := rec.lines()
			for _, n := range res {
				if n.XZBlocks == nil || n.XZBlocks.Encoder != wantEncoder {
					t.Errorf("%s: blocks compressed by %+v; want %s", n.Hostname, n.XZBlocks, wantEncoder)
				}
				if out, err := exec.Command(xzTool, "-t", n.XZ).CombinedOutput(); err != nil {
					t.Fatalf("xz -t %s: %v\n%s", n.XZ, err, out)
				}
				dec := filepath.Join(t.TempDir(), "dec.img")
				f, _ := os.Create(dec)
				cmd := exec.Command(xzTool, "-dc", n.XZ)
				cmd.Stdout = f
				if err := cmd.Run(); err != nil {
					t.Fatal(err)
				}
				f.Close()
				if out, err := exec.Command("cmp", dec, n.File).CombinedOutput(); err != nil {
					t.Fatalf("cmp of xz -dc %s with %s: %v\n%s", filepath.Base(n.XZ), filepath.Base(n.File), err, out)
				}
				got, _ := os.ReadFile(n.XZ)
				// The base's first block past the boot partition (the
				// root's metadata: data, not zeros) is in the node's file,
				// byte for byte, exactly when reused.
				if tc.xzArgs != nil {
					blocks := xzBlockBytes(t, baseXZ)
					past := blocks[min(int(spec.RootStart()*testimage.SectorSize/(8<<20)), len(blocks)-1)]
					if bytes.Contains(got, past) != tc.reused {
						t.Errorf("%s: the base's first block past the boot partition copied = %v; want %v", n.Hostname, !tc.reused, tc.reused)
					}
				}
				// Only the blocks holding what the node changed (a few
				// files and FAT entries) are compressed again: the base's,
				// or those of the .xz made of it.
				blocksOf := baseXZ
				if !tc.reused {
					made, _ := filepath.Glob(filepath.Join(opt.Base.Cache.Dir, "raw", "*.img.xz"))
					var m []string
					if len(made) == 1 {
						m = regexp.MustCompile(`\.` + regexp.QuoteMeta(wantEncoder) + `\.(\d+)\.img\.xz$`).FindStringSubmatch(made[0])
					}
					if m == nil {
						t.Fatalf("the cache holds %v; want one multi-block .xz of the base, named by its encoder %s and first block", made, wantEncoder)
					}
					blocksOf, _ = os.ReadFile(made[0])
					// Its first block ends where the edit's rewrites end
					// (under 24 MiB): the node compresses that again, and
					// copies the block after it.
					head, _ := strconv.ParseInt(m[1], 10, 64)
					c := n.XZBlocks.Compressed
					if head <= 0 || head >= 24<<20 || len(c) == 0 || c[0].Start != 0 || c[0].End != head || len(c) > 1 && c[1].Start == head {
						t.Errorf("%s: compressed again %+v; want first [0, %d), the base .xz's short first block, and not the block after it", n.Hostname, c, head)
					}
				}
				// Every block says its sizes in its header, as xz -T0
				// writes them: xz -T0 decodes it in parallel.
				if flags := xztest.SizeFlags(t, n.XZ); strings.Trim(strings.Join(flags, ""), "cu") != "" {
					t.Errorf("%s: block size flags %v in xz --robot -lvv; want cu for every block", n.Hostname, flags)
				}
				// Counted with repeats: most blocks are zeros, the same
				// bytes many times, and each must be there as often.
				blocks, copied := xzBlockBytes(t, blocksOf), 0
				times := map[string]int{}
				for _, b := range blocks {
					times[string(b)]++
				}
				for b, n := range times {
					copied += min(n, bytes.Count(got, []byte(b)))
				}
				if len(blocks) < 2 || copied < len(blocks)-3 {
					t.Errorf("%s: %d of the base's %d blocks reused; want all but the few the payload changed", n.Hostname, copied, len(blocks))
				}
			}
			made := 0
			for _, l := range logs {
				if strings.Contains(l, "making a multi-block .xz of the base") {
					made++
				}
			}
			if want := map[bool]int{true: 0, false: 1}[tc.reused]; made != want {
				t.Errorf("made the base's multi-block .xz %d times; want %d:\n%s", made, want, strings.Join(logs, "\n"))
			}
		})
	}
}

// TestOSList: os_list.json, checked against a JSON Schema written from
// Raspberry Pi Imager's (by python3-jsonschema), lists every node with a
// file:// URL to its .img.xz (or .img), the sums Imager checks, and no
// customisation; a schema violation is caught.
func TestOSList(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := recipeFor(t, s, "")
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	opt.Nodes = []string{"agent"}
	if _, err := Build(context.Background(), r, opt); err != nil { // agent: .img only
		t.Fatal(err)
	}
	opt.Nodes, opt.Compress = []string{"srv"}, true
	if _, err := Build(context.Background(), r, opt); err != nil { // srv: with .img.xz
		t.Fatal(err)
	}
	path := filepath.Join(opt.OutDir, outdir.OSListFile)
	validate := func(doc string) error {
		testimage.Tool(t, "python3")
		cmd := exec.Command("/usr/bin/python3", "-c", `import json, sys, jsonschema
jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))`, doc, "testdata/imager/os-list.schema.json")
		out, err := cmd.CombinedOutput()
		if err != nil && strings.Contains(string(out), "No module named 'jsonschema'") {
			testimage.Missing(t, "python3-jsonschema (apt-get install python3-jsonschema, or make deps)")
		}
		if err != nil {
			return fmt.Errorf("%v\n%s", err, out)
		}
		return nil
	}
	if err := validate(path); err != nil {
		t.Fatalf("os_list.json against Imager's schema: %v", err)
	}
	var list struct {
		Imager struct {
			Devices []struct {
				Default bool `json:"default"`
			} `json:"devices"`
		} `json:"imager"`
		OSList []struct {
			Name           string `json:"name"`
			URL            string `json:"url"`
			ExtractSHA256  string `json:"extract_sha256"`
			DownloadSHA256 string `json:"image_download_sha256"`
			ExtractSize    int64  `json:"extract_size"`
			DownloadSize   int64  `json:"image_download_size"`
		} `json:"os_list"`
	}
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &list); err != nil || len(list.OSList) != 2 || len(list.Imager.Devices) != 1 || !list.Imager.Devices[0].Default {
		t.Fatalf("os_list.json: %v\n%s", err, b)
	}
	for _, e := range list.OSList {
		u, err := url.Parse(e.URL)
		if err != nil || u.Scheme != "file" || !filepath.IsAbs(u.Path) {
			t.Errorf("%s: url %q is not an absolute file:// URL", e.Name, e.URL)
			continue
		}
		wantFile := e.Name + ".img"
		if e.Name == "srv" {
			wantFile += ".xz"
		}
		if filepath.Base(u.Path) != wantFile {
			t.Errorf("%s: url names %s; want %s", e.Name, filepath.Base(u.Path), wantFile)
		}
		sum, size, err := files.SHA256(context.Background(), u.Path)
		if err != nil || sum != e.DownloadSHA256 || size != e.DownloadSize {
			t.Errorf("%s: the file at url has sha256 %s, %d bytes (%v); the list says %s, %d", e.Name, sum, size, err, e.DownloadSHA256, e.DownloadSize)
		}
		img, imgSize, _ := files.SHA256(context.Background(), filepath.Join(opt.OutDir, e.Name+".img"))
		if img != e.ExtractSHA256 || imgSize != e.ExtractSize {
			t.Errorf("%s: extract_sha256/size %s/%d; the image is %s/%d", e.Name, e.ExtractSHA256, e.ExtractSize, img, imgSize)
		}
	}
	// The check bites: an entry Imager would drop (an unknown
	// init_format) fails the schema.
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(strings.Replace(string(b), `"init_format": "none"`, `"init_format": "pibake"`, 1)), 0o600)
	if err := validate(bad); err == nil {
		t.Error("a list with init_format \"pibake\" passed the schema")
	}
}

// TestBuildReportsProgress: the download, the decompression and every
// node's image and .img.xz are reported from 0 to their whole size.
func TestBuildReportsProgress(t *testing.T) {
	s := buildtest.NewSmallReleaseServer(t)
	r := recipeFor(t, s, "")
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	opt.Compress = true
	var mu sync.Mutex
	first, last := map[string][2]int64{}, map[string][2]int64{}
	opt.Progress = func(task string, done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := first[task]; !ok {
			first[task] = [2]int64{done, total}
		}
		if prev, ok := last[task]; ok && done < prev[0] {
			t.Errorf("%s went back from %d to %d", task, prev[0], done)
		}
		last[task] = [2]int64{done, total}
	}
	if _, err := Build(context.Background(), r, opt); err != nil {
		t.Fatal(err)
	}
	for _, task := range []string{"download", "decompress", "srv: image", "srv: xz", "agent: image", "agent: xz"} {
		f, l := first[task], last[task]
		if f[0] != 0 || l[0] != l[1] || l[1] <= 0 {
			t.Errorf("%s: first report %v, last %v; want 0 of N first and N of N last", task, f, l)
		}
	}
}

// TestCompressFleet is issue 16's "done when" for --compress: a 20-node
// recipe built against a multi-block base, every node's .img.xz sound
// (xz -t) and decompressing to exactly its .img (cmp).
func TestCompressFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and checks 20 compressed images")
	}
	xzTool := testimage.Tool(t, "xz")
	s := buildtest.NewSmallReleaseServer(t) // a multi-block .img.xz, 16 MiB blocks
	r := buildtest.LabRecipe(t, s, "node \"srv\" {\n  role = \"server\"\n  ip = \"192.168.7.10/24\"\n}\nnode \"edge\" {\n  role  = \"agent\"\n  count = 19\n}\n")
	opt := buildOptions(t, s, filepath.Join(t.TempDir(), "cache"))
	opt.Compress, opt.Jobs = true, 4
	var rec logRecorder
	opt.Logf = rec.logf
	res, err := Build(context.Background(), r, opt)
	if err != nil {
		t.Fatal(err)
	}
	logs := rec.lines()
	if len(res) != 20 {
		t.Fatalf("%d results", len(res))
	}
	if slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "compressed whole") }) {
		t.Errorf("the fleet fell back to whole compression:\n%s", strings.Join(logs, "\n"))
	}
	// The base's last block (past every boot partition) is copied into
	// every node's .img.xz as it is.
	blocks := xzBlockBytes(t, s.XZ)
	lastBlock := blocks[len(blocks)-1]
	g := new(errgroup.Group)
	g.SetLimit(4)
	for _, n := range res {
		g.Go(func() error {
			if got, err := os.ReadFile(n.XZ); err != nil || !bytes.Contains(got, lastBlock) {
				return fmt.Errorf("%s does not hold the base's last block as it is (%v)", n.XZ, err)
			}
			if out, err := exec.Command(xzTool, "-t", n.XZ).CombinedOutput(); err != nil {
				return fmt.Errorf("xz -t %s: %v\n%s", n.XZ, err, out)
			}
			cmd := exec.Command("sh", "-c", xzTool+" -dc \"$1\" | cmp - \"$2\"", "sh", n.XZ, n.File)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("xz -dc %s | cmp - %s: %v\n%s", n.XZ, n.File, err, out)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}
