package xzfile

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

// TestXZFileReadAt reads random ranges of files compressed by the real xz,
// multi-block and single-block, and compares them with the original.
func TestXZFileReadAt(t *testing.T) {
	xzTool := testimage.Tool(t, "xz")
	rng := rand.New(rand.NewPCG(1, 2))
	// 7.5 MiB, image-like: runs of zeros between data, sizes not
	// multiples of the block or chunk size.
	raw := make([]byte, 7<<20+512<<10+123)
	for off := 0; off < len(raw); off += 300 << 10 {
		n := min(100<<10+rng.IntN(200<<10), len(raw)-off)
		for i := off; i < off+n; i++ {
			raw[i] = byte(rng.Uint32())
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(src, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"multi-block", []string{"-T1", "-1", "--block-size=3MiB"}},
		{"single-block", []string{"-T1", "-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			compressed, err := exec.Command(xzTool, append(tc.args, "-c", src)...).Output()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, tc.name+".img.xz")
			os.WriteFile(path, compressed, 0o600)
			x, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer x.Close()
			if x.Size() != int64(len(raw)) {
				t.Fatalf("Size = %d; want %d", x.Size(), len(raw))
			}
			if fi, err := x.Stat(); err != nil || fi.Size() != int64(len(raw)) {
				t.Errorf("Stat: %v, %v", fi, err)
			}
			wantBlocks := map[string]int{"multi-block": 3, "single-block": 1}[tc.name]
			if x.Blocks() != wantBlocks {
				t.Errorf("%d blocks; want %d", x.Blocks(), wantBlocks)
			}
			// Backwards and forwards, across chunk and block boundaries.
			offs := []int64{len64(raw) - 10, 0, 3<<20 - 7, 1 << 20, 6 << 20, 4<<20 + 5}
			for i := 0; i < 40; i++ {
				offs = append(offs, rng.Int64N(len64(raw)))
			}
			for _, off := range offs {
				n := min(int64(1+rng.IntN(2<<20)), len64(raw)-off)
				got := make([]byte, n)
				if k, err := x.ReadAt(got, off); err != nil || int64(k) != n {
					t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, k, err)
				}
				if !bytes.Equal(got, raw[off:off+n]) {
					t.Fatalf("ReadAt(%d bytes at %d) differs from the original", n, off)
				}
			}
			if x.lru.Len() > xzCacheChunks {
				t.Errorf("the cache holds %d chunks; the bound is %d", x.lru.Len(), xzCacheChunks)
			}
			buf := make([]byte, 100)
			if k, err := x.ReadAt(buf, len64(raw)-40); k != 40 || !errors.Is(err, io.EOF) {
				t.Errorf("ReadAt past the end = %d, %v; want 40, EOF", k, err)
			}
			// Read and Seek, as go-diskfs uses them.
			if _, err := x.Seek(5<<20, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if k, err := io.ReadFull(x, buf); err != nil || !bytes.Equal(buf[:k], raw[5<<20:5<<20+100]) {
				t.Errorf("Seek + Read: %v", err)
			}
		})
	}

	// A damaged block is an error, not wrong bytes.
	compressed, _ := exec.Command(xzTool, "-T1", "-1", "--block-size=3MiB", "-c", src).Output()
	compressed[len(compressed)/2] ^= 0xff
	bad := filepath.Join(dir, "bad.img.xz")
	os.WriteFile(bad, compressed, 0o600)
	x, err := Open(bad)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	all := make([]byte, len(raw))
	if _, err := x.ReadAt(all, 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reading a damaged .xz: %v; want a corruption error", err)
	}
}

func len64(b []byte) int64 { return int64(len(b)) }
