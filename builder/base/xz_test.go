package base

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
	"github.com/ulikunitz/xz"
)

// testPayload is image-like data: runs of zeros (which must become holes),
// text and incompressible bytes.
func testPayload(size int) []byte {
	rng := rand.New(rand.NewSource(1))
	b := make([]byte, size)
	for off := 0; off < size; {
		n := 1 + rng.Intn(300_000)
		if off+n > size {
			n = size - off
		}
		switch rng.Intn(3) {
		case 0: // zeros
		case 1:
			copy(b[off:off+n], bytes.Repeat([]byte("raspberry pi image text "), n/24+1))
		default:
			rng.Read(b[off : off+n])
		}
		off += n
	}
	return b
}

// writeXZ compresses data with ulikunitz/xz in blocks of blockSize (0: one
// block).
func writeXZ(t testing.TB, path string, data []byte, blockSize int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := xz.WriterConfig{BlockSize: blockSize}
	if blockSize == 0 {
		cfg.BlockSize = 1 << 40
	}
	w, err := cfg.NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDecompressXZ(t *testing.T) {
	data := testPayload(6 << 20)
	dir := t.TempDir()
	tests := []struct {
		name  string
		make  func(path string)
		jobs  int
		multi bool
	}{
		{name: "ulikunitz one block", make: func(p string) { writeXZ(t, p, data, 0) }, jobs: 4},
		{name: "ulikunitz 1 MiB blocks", make: func(p string) { writeXZ(t, p, data, 1<<20) }, jobs: 3, multi: true},
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
		t.Run(tt.name, func(t *testing.T) {
			src := filepath.Join(dir, "in"+string(rune('a'+i))+".xz")
			tt.make(src)
			in, _ := os.Open(src)
			fi, _ := in.Stat()
			blocks, total, err := xzIndex(in, fi.Size())
			in.Close()
			if err != nil || total != int64(len(data)) || (len(blocks) > 1) != tt.multi {
				t.Fatalf("xzIndex = %d blocks, %d bytes, %v; want %d bytes, multi-block %v", len(blocks), total, err, len(data), tt.multi)
			}
			dst := filepath.Join(dir, "out")
			if err := decompressXZ(context.Background(), src, dst, tt.jobs, nil); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(dst)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("decompressed %d bytes differ from the %d compressed (%v)", len(got), len(data), err)
			}
		})
	}
}

func TestDecompressXZCorrupt(t *testing.T) {
	data := testPayload(3 << 20)
	dir := t.TempDir()
	src := filepath.Join(dir, "good.xz")
	writeXZ(t, src, data, 1<<20)
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
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, "bad.xz")
			os.WriteFile(p, b, 0o644)
			err := decompressXZ(context.Background(), p, filepath.Join(dir, "out"), 2, nil)
			if !errors.Is(err, errCorruptXZ) {
				t.Errorf("decompressXZ(%s) = %v; want a corrupt-xz error", name, err)
			}
		})
	}
}

// xzTool compresses with the real xz, as pi-gen does.
func xzTool(t testing.TB, dst string, data []byte, args ...string) {
	t.Helper()
	cmd := exec.Command(testimage.Tool(t, "xz"), append([]string{"-c", "-6"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout = out
	if err := cmd.Run(); err != nil {
		t.Fatalf("xz: %v", err)
	}
}
