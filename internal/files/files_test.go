package files

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestSHA256Sparse hashes a file with a hole, data and a hole at the end
// as sha256 of its bytes does, and refuses a range past its end.
func TestSHA256Sparse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("data in the middle"), 3<<20)
	f.Truncate(8 << 20)
	f.Close()
	all, _ := os.ReadFile(p)
	want := sha256.Sum256(all)
	sum, size, err := SHA256(context.Background(), p)
	if err != nil || sum != hex.EncodeToString(want[:]) || size != 8<<20 {
		t.Errorf("SHA256 = %s, %d, %v; want %x, %d", sum, size, err, want, 8<<20)
	}
	f, _ = os.Open(p)
	defer f.Close()
	if err := HashRange(context.Background(), sha256.New(), f, 0, 9<<20); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("HashRange past the end = %v; want ErrUnexpectedEOF", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := SHA256(ctx, p); !errors.Is(err, context.Canceled) {
		t.Errorf("SHA256 cancelled = %v", err)
	}
	if !Exists(p) || Exists(p+".not") {
		t.Error("Exists is wrong")
	}
}
