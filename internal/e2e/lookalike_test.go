//go:build e2e

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

// flavour is one look-alike the test boots: a Raspberry Pi OS release,
// possibly with a twist.
type flavour struct {
	name    string // the look-alike, as mkrootfs.sh names it
	release string // bookworm or trixie
	spec    testimage.Spec
	// nodes, when set, are the only nodes booted on this flavour.
	nodes []string
	// race: cloud-init's local stage runs before /boot/firmware is
	// mounted unless cloud-init is ordered after the mount, as on a Pi 5
	// booting from NVMe (cloud-init#6614; mkrootfs.sh, e2e-bootfs-late).
	race bool
}

var flavours = []flavour{
	{name: "bookworm", release: "bookworm", spec: testimage.Bookworm()},
	{name: "trixie", release: "trixie", spec: testimage.Trixie()},
	// The lab node (no user block) and an agent, with the race forced.
	{name: "trixie-race", release: "trixie", spec: testimage.Trixie(), nodes: []string{"pi-server", "e2e-agent"}, race: true},
}

// boots reports whether the flavour boots the node host.
func (fl flavour) boots(host string) bool {
	return fl.nodes == nil || slices.Contains(fl.nodes, host)
}

// lookalike is a bootable Raspberry Pi OS look-alike image of one release,
// with the kernel and initrd that boot it.
type lookalike struct {
	img, kernel, initrd string
}

var (
	lookalikeMu   sync.Mutex
	lookalikeOnce = map[string]*sync.Once{}
	lookalikes    = map[string]lookalike{}
	lookalikeErr  = map[string]error{}
)

// buildLookalike returns the look-alike of fl, building it once (cached on
// disk under a key derived from everything in testdata/e2e) and safe to
// call from parallel tests: both releases build at the same time.
func buildLookalike(t *testing.T, fl flavour) lookalike {
	t.Helper()
	lookalikeMu.Lock()
	once := lookalikeOnce[fl.name]
	if once == nil {
		once = new(sync.Once)
		lookalikeOnce[fl.name] = once
	}
	lookalikeMu.Unlock()
	once.Do(func() {
		la, err := makeLookalike(t, fl)
		lookalikeMu.Lock()
		lookalikes[fl.name], lookalikeErr[fl.name] = la, err
		lookalikeMu.Unlock()
	})
	lookalikeMu.Lock()
	defer lookalikeMu.Unlock()
	if err := lookalikeErr[fl.name]; err != nil {
		t.Fatalf("look-alike %s: %v", fl.name, err)
	}
	return lookalikes[fl.name]
}

func makeLookalike(t *testing.T, fl flavour) (lookalike, error) {
	script, err := filepath.Abs("../../testdata/e2e/mkrootfs.sh")
	if err != nil {
		return lookalike{}, err
	}
	key, err := treeHash(filepath.Dir(script))
	if err != nil {
		return lookalike{}, err
	}
	dir := filepath.Join(cacheRoot(t), fl.name+"-"+key)
	la := lookalike{img: filepath.Join(dir, "lookalike.img"), kernel: filepath.Join(dir, "vmlinuz"), initrd: filepath.Join(dir, "initrd.img")}
	if _, err := os.Stat(la.img); err == nil {
		return la, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "rootfs.done")); err != nil {
		t.Logf("building the %s look-alike in %s (mmdebstrap under emulation: several minutes the first time)", fl.name, dir)
		cmd := exec.Command("sh", script, fl.name, dir)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return lookalike{}, err
		}
	}
	spec := fl.spec
	spec.RootDir = filepath.Join(dir, "rootfs")
	if spec.RootMiB, err = rootMiB(spec.RootDir); err != nil {
		return lookalike{}, err
	}
	if err := testimage.Build(la.img+".tmp", spec); err != nil {
		return lookalike{}, err
	}
	if err := os.Rename(la.img+".tmp", la.img); err != nil {
		return lookalike{}, err
	}
	return la, os.RemoveAll(spec.RootDir) // the image holds it now
}

// rootMiB sizes the root partition as pi-gen does (export-image/prerun.sh):
// the tree plus 20% plus 200 MiB, in whole 8 MiB steps.
func rootMiB(dir string) (int64, error) {
	var size int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			size += info.Size()
		}
		return nil
	})
	mib := (size*12/10+200<<20)>>20 + 1
	return (mib + 7) / 8 * 8, err
}

// treeHash hashes every file under dir (names and contents), so that a
// change to the script or any stand-in builds a new look-alike.
func treeHash(dir string) (string, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, p)
		}
		return err
	})
	if err != nil {
		return "", err
	}
	sort.Strings(names)
	h := sha256.New()
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(dir, name)
		h.Write([]byte(rel + "\x00"))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func cacheRoot(t *testing.T) string {
	if d := os.Getenv("PIBAKE_E2E_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(d, "pibake-e2e")
}
