// Package xztest is test-only: xz fixtures shared by the tests of the
// packages that read and write xz files, and what the real xz says of a
// file.
package xztest

import (
	"bytes"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
	"github.com/ulikunitz/xz"
)

// Payload is image-like data: runs of zeros (which must become holes),
// text and incompressible bytes; the same for the same size.
func Payload(size int) []byte {
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

// Write compresses data to path with ulikunitz/xz in blocks of blockSize
// (0: one block).
func Write(t testing.TB, path string, data []byte, blockSize int64) {
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

// Compress is what the system's xz makes of data with args (after
// --compress --stdout --format=xz), without XZ_OPT and XZ_DEFAULTS.
func Compress(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(testimage.Tool(t, "xz"), append([]string{"--compress", "--stdout", "--format=xz"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v", args, err)
	}
	return out
}

// SizeFlags lists, per block of the .xz file at path, which sizes its
// header states, as xz --robot -lvv says: "cu" (both), "c", "u" or "--".
func SizeFlags(t testing.TB, path string) []string {
	t.Helper()
	out, err := exec.Command(testimage.Tool(t, "xz"), "--robot", "-lvv", path).Output()
	if err != nil {
		t.Fatalf("xz --robot -lvv %s: %v", path, err)
	}
	var flags []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Split(line, "\t"); f[0] == "block" && len(f) > 12 {
			flags = append(flags, f[12])
		}
	}
	return flags
}
