package sparse

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestCopyFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, _ := os.Create(src)
	f.Truncate(64 << 20)
	data := bytes.Repeat([]byte("pi"), 1<<19) // 1 MiB
	f.WriteAt(data, 8<<20)
	f.WriteAt(data, 40<<20+123)
	f.Close()
	want, _ := os.ReadFile(src)

	dst := filepath.Join(dir, "dst")
	if err := CopyFile(dst, src, 0, 64<<20); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, want) {
		t.Fatal("copy differs")
	}
	part := filepath.Join(dir, "part")
	if err := CopyFile(part, src, 8<<20, 2<<20); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(part)
	if !bytes.Equal(got, want[8<<20:10<<20]) {
		t.Fatal("range copy differs")
	}
	in, _ := os.Open(src)
	defer in.Close()
	if ex := Extents(in, 0, 64<<20); len(ex) == 0 || len(ex) > 4 {
		t.Errorf("Extents = %v; want the two written regions (or all, without hole support)", ex)
	}
}

// TestCopyAtShortSource: a source that ends before the range is an
// error, not zeros in the copy.
func TestCopyAtShortSource(t *testing.T) {
	in := bytes.NewReader(bytes.Repeat([]byte("x"), 1000))
	out := &bytes.Buffer{}
	w := writerAt{out}
	err := CopyAt(w, in, 0, 4096, 0, make([]byte, 512))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("CopyAt past the end of the source = %v; want io.ErrUnexpectedEOF", err)
	}
}

type writerAt struct{ b *bytes.Buffer }

func (w writerAt) WriteAt(p []byte, off int64) (int, error) { return w.b.Write(p) }
