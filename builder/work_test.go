package builder

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/inputs"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/sparse"
	"github.com/pibake/pibake/internal/testimage"
)

// nodeWork is what one more node costs in work, not time: the output
// directory's filesystem steps by kind (fsync, dirsync, write, rename,
// create, unlink, mkdir), the bytes the process read per byte of the
// image's data, and the keys stretched.
type nodeWork struct {
	steps     map[string]float64
	readRatio float64
	stretches float64
	dataMiB   float64
}

// TestMarginalNodeWork is issue 29's guard in work rather than time,
// which nothing else running on the machine moves: a 3-node build minus
// a 1-node build, per node. Each node's image is written and synced
// outside the seam (one fsync, not counted here); through the seam it
// costs its block map (write, fsync), the journal (write, fsync, rename,
// directory sync, then its removal and a directory sync), the parts
// renamed into place (a directory sync) and SHA256SUMS, manifest.json and
// os_list.json (each write, fsync, rename, directory sync). The process
// reads each byte of the image's data about twice (copy_file_range counts
// its bytes; the hash reads the base once): reading the image again after
// writing it would make it three times. Nodes sharing their secrets share
// one key stretch; a node with a Wi-Fi key of its own costs one.
func TestMarginalNodeWork(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("bytes read are counted in /proc/self/io, on Linux")
	}
	spec := buildtest.Small()
	spec.RootMiB, spec.FillMiB = 160, 128
	img := testimage.For(t, spec)
	for _, tc := range []struct {
		name string
		wifi bool // every agent has its own Wi-Fi key
		// stretches is what one more node costs in key stretches.
		stretches float64
	}{
		{"shared secrets", false, 0},
		{"a Wi-Fi key per node", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := marginalWork(t, img, tc.wifi)
			t.Logf("one more node: steps %v; read %.2f× its %.0f MiB of data; %.1f key stretches", w.steps, w.readRatio, w.dataMiB, w.stretches)
			// Per node: the image, its block map and its SBOM (issue
			// 26) as parts, the journal, SHA256SUMS and the manifest.
			want := map[string]float64{"fsync": 6, "dirsync": 6, "write": 6, "rename": 7, "create": 1, "unlink": 1}
			for kind, n := range want {
				if w.steps[kind] != n {
					t.Errorf("one more node: %v %s steps; want %v", w.steps[kind], kind, n)
				}
			}
			for kind := range w.steps {
				if _, ok := want[kind]; !ok && w.steps[kind] != 0 {
					t.Errorf("one more node: %v %s steps; want none", w.steps[kind], kind)
				}
			}
			if w.readRatio < 1.5 || w.readRatio > 2.5 {
				t.Errorf("one more node reads %.2f× its image's data; want about 2 (copied once, hashed once)", w.readRatio)
			}
			if w.stretches != tc.stretches {
				t.Errorf("one more node stretches %v keys; want %v", w.stretches, tc.stretches)
			}
		})
	}
}

// marginalWork builds 1 and 3 nodes, each run a cluster of its own (no
// key stretched before), into new directories, with one job (one node's work
// at a time, in order), and returns the difference per node.
func marginalWork(t *testing.T, img string, wifi bool) nodeWork {
	const m, n = 1, 3
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	var data int64
	for _, e := range sparse.Extents(f, 0, fi.Size()) {
		data += e[1] - e[0]
	}
	f.Close()
	cache := filepath.Join(t.TempDir(), "cache")
	cluster := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	type counts struct {
		steps         map[string]int
		read, stretch int64
	}
	build := func(run string, nodes int) counts {
		src := fmt.Sprintf("cluster {\n  name  = %q\n  token = %q\n}\nnode \"s\" {\n  role = \"server\"\n  ip   = \"10.0.0.1/24\"\n}\n", cluster+"-"+run, buildtest.Token)
		for i := 1; i < nodes; i++ {
			src += fmt.Sprintf("node \"a%d\" {\n  role = \"agent\"\n", i)
			if wifi {
				src += fmt.Sprintf("  wifi {\n    ssid    = \"lab\"\n    psk     = \"key-of-node-%s-%d\"\n    country = \"DE\"\n  }\n", run, i)
			}
			src += "}\n"
		}
		fs := buildtest.NewCrashFS(-1)
		opt := Options{OutDir: filepath.Join(t.TempDir(), "out"), Jobs: 1, Version: "test", Image: img, OutFS: fs,
			Base: base.Options{Cache: base.Cache{Dir: cache}}}
		read0, stretch0 := readBytes(t), inputs.Stretches()
		if _, err := Build(context.Background(), buildtest.Recipe(t, src), opt); err != nil {
			t.Fatal(err)
		}
		c := counts{steps: map[string]int{}, read: readBytes(t) - read0, stretch: inputs.Stretches() - stretch0}
		for _, s := range fs.Steps() {
			c.steps[strings.Fields(s)[0]]++
		}
		return c
	}
	build("warm", 1) // the base into the cache, as in the benchmark
	cm, cn := build("m", m), build("n", n)
	per := float64(n - m)
	w := nodeWork{steps: map[string]float64{}, dataMiB: float64(data) / (1 << 20)}
	for kind := range cn.steps {
		w.steps[kind] = float64(cn.steps[kind]-cm.steps[kind]) / per
	}
	w.readRatio = float64(cn.read-cm.read) / per / float64(data)
	w.stretches = float64(cn.stretch-cm.stretch) / per
	return w
}

// readBytes is how many bytes this process has read (rchar of
// /proc/self/io: read, pread, copy_file_range's source).
func readBytes(t *testing.T) int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "rchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no rchar in /proc/self/io")
	return 0
}
