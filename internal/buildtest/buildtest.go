// Package buildtest holds what the tests that build images share across
// packages (builder, fleet, flashing): a loopback release server serving a
// generated Raspberry Pi OS image as downloads.raspberrypi.com does,
// recipes written to a temporary file, and the output directory's
// invariant checked with the real sha256sum. Test support only.
package buildtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/sparse"
	"github.com/pibake/pibake/internal/testimage"
	"github.com/pibake/pibake/recipes"
)

// Token is the cluster token of the recipes the tests write.
const Token = "e2e-cluster-token-0123456789abcdef"

// ReleaseServer serves a generated Bookworm-shaped image as .img.xz with
// its .sha256, like downloads.raspberrypi.com, counting requests.
type ReleaseServer struct {
	*httptest.Server
	// Raw is the uncompressed base image, XZ the file served.
	Raw  string
	XZ   []byte
	reqs atomic.Int32
}

// release is a generated image and its .xz, made once per test process
// and spec.
type release struct {
	once sync.Once
	raw  string
	xz   []byte
	err  error
}

var (
	releasesMu sync.Mutex
	releases   = map[string]*release{} // by fmt.Sprintf("%+v", spec): a Spec holds a map
)

// NewReleaseServer starts a release server for a Bookworm-shaped image.
func NewReleaseServer(t testing.TB) *ReleaseServer {
	t.Helper()
	return NewReleaseServerFor(t, testimage.Bookworm())
}

// NewSmallReleaseServer starts a release server for a SmallBookworm
// image: a quarter of a release-sized one to decompress, copy, hash and
// check, for the tests whose subject is not the release's size.
func NewSmallReleaseServer(t testing.TB) *ReleaseServer {
	t.Helper()
	return NewReleaseServerFor(t, SmallBookworm())
}

// NewReleaseServerFor starts a release server for an image of spec; the
// image is built once per test process, and removed by
// testimage.Cleanup.
func NewReleaseServerFor(t testing.TB, spec testimage.Spec) *ReleaseServer {
	t.Helper()
	xzTool := testimage.Tool(t, "xz")
	releasesMu.Lock()
	key := fmt.Sprintf("%+v", spec)
	rel := releases[key]
	if rel == nil {
		rel = &release{}
		releases[key] = rel
	}
	releasesMu.Unlock()
	rel.once.Do(func() {
		rel.raw = testimage.TempPath("2025-05-13-raspios-" + spec.Name + "-arm64-lite.img")
		if rel.err = testimage.Build(rel.raw, spec); rel.err != nil {
			return
		}
		rel.xz, rel.err = exec.Command(xzTool, "-T0", "-1", "--block-size=16MiB", "-c", rel.raw).Output()
	})
	if rel.err != nil {
		t.Fatal(rel.err)
	}
	s := &ReleaseServer{Raw: rel.raw, XZ: rel.xz}
	sum := sha256.Sum256(rel.xz)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.reqs.Add(1)
		switch r.URL.Path {
		case "/latest":
			http.Redirect(w, r, "/images/release.img.xz", http.StatusFound)
		case "/images/release.img.xz.sha256":
			fmt.Fprintf(w, "%s  release.img.xz\n", hex.EncodeToString(sum[:]))
		case "/images/release.img.xz":
			http.ServeContent(w, r, "release.img.xz", time.Unix(1e9, 0), bytes.NewReader(s.XZ))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// Requests is how many requests the server has answered.
func (s *ReleaseServer) Requests() int32 { return s.reqs.Load() }

// SHA is the SHA-256 of the .img.xz served.
func (s *ReleaseServer) SHA() string {
	sum := sha256.Sum256(s.XZ)
	return hex.EncodeToString(sum[:])
}

// BaseOptions fetch from the server into cache.
func (s *ReleaseServer) BaseOptions(cache string) base.Options {
	return base.Options{Cache: base.Cache{Dir: cache}, HTTPClient: s.Client(), RetryDelay: time.Millisecond}
}

// Recipe writes src to lab.hcl in a temporary directory and loads it.
func Recipe(t testing.TB, src string) *recipes.Recipe {
	t.Helper()
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

// TwoNodes are a server with a static address and a DHCP agent.
const TwoNodes = `
node "srv" {
  role = "server"
  ip   = "192.168.7.10/24"
}
node "agent" {
  role = "agent"
}
`

// LabRecipe is a recipe of cluster "lab" built from s's image, with no
// token (the build generates one), and the given node blocks.
func LabRecipe(t testing.TB, s *ReleaseServer, nodes string) *recipes.Recipe {
	t.Helper()
	return Recipe(t, fmt.Sprintf("image {\n  source = %q\n}\ncluster {\n  name = \"lab\"\n}\n%s", s.URL+"/latest", nodes))
}

// ReadBootFile reads a file from an image's boot partition.
func ReadBootFile(t testing.TB, img, name string) string {
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

// BenchImage is a 1.5 GiB Raspberry Pi OS-shaped image holding 768 MiB of
// data, like a real release.
func BenchImage(b testing.TB) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "base.img")
	spec := testimage.Bookworm()
	spec.RootMiB, spec.FillMiB = 1024, 768
	if err := testimage.Build(p, spec); err != nil {
		b.Fatal(err) // a benchmark that measured nothing must not pass
	}
	return p
}

// BenchRecipe is a recipe of a server "s" and nodes-1 agents "a-N".
func BenchRecipe(b testing.TB, nodes int) *recipes.Recipe {
	b.Helper()
	src := fmt.Sprintf("cluster {\n  token = %q\n}\nnode \"s\" {\n  role = \"server\"\n  ip = \"10.0.0.1/24\"\n}\n", Token)
	if nodes > 1 {
		src += fmt.Sprintf("node \"a\" {\n  role = \"agent\"\n  count = %d\n}\n", nodes-1)
	}
	return Recipe(b, src)
}

// Command runs a command, failing b with its output if it fails.
func Command(b testing.TB, name string, args ...string) {
	b.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s: %v %s", name, err, out)
	}
}

// SmallBookworm is a Bookworm-shaped image (2 KiB clusters, 4 MiB
// alignment, init=…firstboot) with a boot partition just big enough for
// FAT32 with those clusters (65525 of them) and a small root: a quarter of
// the release's size, for the command tests that build and flash it whole.
func SmallBookworm() testimage.Spec {
	s := testimage.Bookworm()
	s.BootMiB, s.RootMiB = 132, 16
	return s
}

// Small is a Trixie-shaped image with a 40 MiB boot partition and a
// 16 MiB root: ten times less to copy and hash than a release-sized one,
// for tests that build hundreds of times. (FAT32 needs 65525 clusters:
// 40 MiB of 512-byte clusters has 80,000.)
func Small() testimage.Spec {
	s := testimage.Trixie()
	s.BootMiB, s.RootMiB = 40, 16
	return s
}

// Snapshot hashes every file under dir by its path relative to dir, the
// lock aside; in os_list.json, which names its directory, dir reads as
// "DIR".
func Snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "lock" {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if filepath.Base(rel) == outdir.OSListFile {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			abs, _ := filepath.Abs(dir)
			sum := sha256.Sum256(bytes.ReplaceAll(b, []byte(abs), []byte("DIR")))
			m[rel] = hex.EncodeToString(sum[:])
			return nil
		}
		sum, err := ContentSum(p)
		m[rel] = sum
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ContentSum is a digest of a file's bytes that reads only its data
// extents: the size, then each non-zero 64 KiB chunk with its offset.
// Two files have the same ContentSum exactly when they hold the same
// bytes, however their holes lie (a chunk of zeros inside a data extent
// counts as a hole); a SHA-256 of the whole file would hash every byte of
// an image's holes, most of what it is.
func ContentSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "size %d\n", fi.Size())
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	next := int64(0) // where the chunks not yet looked at start
	for _, e := range sparse.Extents(f, 0, fi.Size()) {
		// Chunks aligned to the file, not to the extent, each looked at
		// once: the same bytes give the same chunks whatever the extents.
		for off := max(e[0]/chunk*chunk, next); off < e[1]; off += chunk {
			next = off + chunk
			n, err := f.ReadAt(buf, off)
			if err != nil && !errors.Is(err, io.EOF) {
				return "", fmt.Errorf("read %s at %d: %w", path, off, err)
			}
			if sparse.IsZero(buf[:n]) {
				continue
			}
			fmt.Fprintf(h, "chunk %d %d\n", off, n)
			h.Write(buf[:n])
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Copy copies a directory tree with cp -a, keeping holes.
func Copy(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", src, dst, err, out)
	}
}
