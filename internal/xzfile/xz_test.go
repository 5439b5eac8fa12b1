package xzfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/pibake/pibake/internal/sparse"
	"github.com/pibake/pibake/internal/testimage"
	"github.com/pibake/pibake/internal/xztest"
)

// decoders are the two ways Decompress works, each chosen as a user
// would choose it (PIBAKE_XZ): the system's xz (required under CI=true)
// and pibake's own decoder, the fallback without one.
func decoders(t *testing.T) []struct{ name, env string } {
	return []struct{ name, env string }{
		{"system xz", testimage.Tool(t, "xz")},
		{"builtin", "builtin"},
	}
}

func TestDecompressXZ(t *testing.T) {
	data := xztest.Payload(6 << 20)
	dir := t.TempDir()
	tests := []struct {
		name  string
		make  func(path string)
		jobs  int
		multi bool
	}{
		{name: "ulikunitz one block", make: func(p string) { xztest.Write(t, p, data, 0) }, jobs: 4},
		{name: "ulikunitz 1 MiB blocks", make: func(p string) { xztest.Write(t, p, data, 1<<20) }, jobs: 3, multi: true},
		{name: "xz -T2 blocks", make: func(p string) { xzTool(t, p, data, "-T2", "--block-size=1MiB") }, jobs: 2, multi: true},
		{name: "xz two concatenated streams", make: func(p string) {
			xzTool(t, p+".a", data[:2<<20], "--block-size=512KiB")
			xzTool(t, p+".b", data[2<<20:], "--block-size=1MiB")
			a, _ := os.ReadFile(p + ".a")
			b, _ := os.ReadFile(p + ".b")
			os.WriteFile(p, append(append(a, 0, 0, 0, 0), b...), 0o644) // with stream padding
		}, jobs: 2, multi: true},
	}
	for i, tt := range tests {
		src := filepath.Join(dir, "in"+string(rune('a'+i))+".xz")
		tt.make(src)
		in, _ := os.Open(src)
		fi, _ := in.Stat()
		blocks, total, err := xzIndex(in, fi.Size())
		in.Close()
		if err != nil || total != int64(len(data)) || (len(blocks) > 1) != tt.multi {
			t.Fatalf("%s: xzIndex = %d blocks, %d bytes, %v; want %d bytes, multi-block %v", tt.name, len(blocks), total, err, len(data), tt.multi)
		}
		var holes [][][2]int64
		for _, d := range decoders(t) {
			t.Run(tt.name+"/"+d.name, func(t *testing.T) {
				t.Setenv(xzEnv, d.env)
				dst := filepath.Join(dir, "out-"+d.name)
				if err := Decompress(context.Background(), src, dst, tt.jobs, nil); err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(dst)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("decompressed %d bytes differ from the %d compressed (%v)", len(got), len(data), err)
				}
				f, _ := os.Open(dst)
				defer f.Close()
				holes = append(holes, sparse.Extents(f, 0, total))
			})
		}
		// Both decoders leave the same holes: the cache's image is one
		// file whichever made it.
		if len(holes) == 2 && !reflect.DeepEqual(holes[0], holes[1]) {
			t.Errorf("%s: the system xz's output has data extents %v, the builtin decoder's %v", tt.name, holes[0], holes[1])
		}
	}
}

func TestDecompressXZCorrupt(t *testing.T) {
	data := xztest.Payload(3 << 20)
	dir := t.TempDir()
	src := filepath.Join(dir, "good.xz")
	xztest.Write(t, src, data, 1<<20)
	good, _ := os.ReadFile(src)
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0x40 // inside a block: its check must catch it
	tests := map[string][]byte{
		"truncated":   good[:len(good)-100],
		"cut in half": good[:len(good)/2],
		"bit flip":    flipped,
		"not xz":      []byte("this is not an xz file at all, just text......."),
		"empty":       nil,
	}
	for _, d := range decoders(t) {
		for name, b := range tests {
			t.Run(d.name+"/"+name, func(t *testing.T) {
				t.Setenv(xzEnv, d.env)
				p := filepath.Join(dir, "bad.xz")
				os.WriteFile(p, b, 0o644)
				err := Decompress(context.Background(), p, filepath.Join(dir, "out"), 2, nil)
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("Decompress(%s) = %v; want a corrupt-xz error", name, err)
				}
			})
		}
	}
}

// TestSystemXZFound: where the tests run (and under CI=true, where xz
// must be), the system's xz is new enough to be the decoder: the fast
// path is the one tested, not silently the fallback.
func TestSystemXZFound(t *testing.T) {
	bin := testimage.Tool(t, "xz")
	t.Setenv(xzEnv, "")
	if got := xzDecoder(); got != bin {
		out, _ := exec.Command(bin, "--version").Output()
		testimage.Missing(t, fmt.Sprintf("the system xz %s (%s) is not used as the decoder (%q): it needs XZ Utils 5.4 or later", bin, bytes.TrimSpace(out), got))
	}
}

// cancelWriter is a decompression's output that cancels it at the first
// write, and counts what is written after.
type cancelWriter struct {
	cancel        func()
	mu            sync.Mutex
	first, after  int64
	cancelledOnce bool
}

func (w *cancelWriter) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.cancelledOnce {
		w.cancelledOnce = true
		w.first = int64(len(p))
		w.cancel()
	} else {
		w.after += int64(len(p))
	}
	return len(p), nil
}

// TestDecompressInterrupt: an interrupt (Ctrl-C) stops either decoder at
// once, the system's xz killed: little or nothing is written after it,
// and Decompress says it was interrupted, not that the file is bad. The
// system decoder is a stand-in that writes 1 MiB (one read) and then
// hangs, so only killing it ends the test.
func TestDecompressInterrupt(t *testing.T) {
	data := xztest.Payload(8 << 20)
	dir := t.TempDir()
	src := filepath.Join(dir, "in.xz")
	xztest.Write(t, src, data, 2<<20)
	in, blocks, total, err := openIndexed(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	hang := filepath.Join(dir, "xz")
	os.WriteFile(hang, []byte("#!/bin/sh\nhead -c 1048576 /dev/urandom\nexec sleep 600\n"), 0o755)
	run := map[string]func(ctx context.Context, w *cancelWriter) error{
		"system xz": func(ctx context.Context, w *cancelWriter) error {
			return decodeSystem(ctx, hang, src, w, total, 2, nil)
		},
		"builtin": func(ctx context.Context, w *cancelWriter) error {
			return decodeBlocks(ctx, in, w, blocks, 2, nil)
		},
	}
	for name, decode := range run {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			w := &cancelWriter{cancel: cancel}
			stopsOnInterrupt(t, "decode", func() error { return decode(ctx, w) })
			// Each worker may finish the write it was in: one 1 MiB
			// buffer per job.
			if w.after > 2<<20 {
				t.Errorf("%d bytes written after the interrupt; want at most one buffer per job", w.after)
			}
		})
	}
}

// stopsOnInterrupt runs f, interrupted (its context cancelled) while it
// works, and checks that it stops and says it was interrupted.
func stopsOnInterrupt(t *testing.T, name string, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s after an interrupt = %v; want context.Canceled", name, err)
		}
	case <-time.After(30 * time.Second): // liveness, not a timing claim
		t.Fatalf("%s did not stop after an interrupt", name)
	}
}

// xzTool compresses with the real xz, as pi-gen does.
func xzTool(t testing.TB, dst string, data []byte, args ...string) {
	t.Helper()
	if err := os.WriteFile(dst, xztest.Compress(t, data, append([]string{"-6"}, args...)...), 0o644); err != nil {
		t.Fatal(err)
	}
}
