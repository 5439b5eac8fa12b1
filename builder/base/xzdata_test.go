package base

import (
	"bytes"
	"math/rand"
	"os"
	"testing"

	"github.com/ulikunitz/xz"
)

// (The same fixtures as internal/xzfile's tests, for the cache's.)

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
