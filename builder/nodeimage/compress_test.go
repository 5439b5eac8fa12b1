package nodeimage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pibake/pibake/internal/xzfile"
	"github.com/ulikunitz/xz"
)

// cancellingReader is an image that cancels the build once some of it has
// been read, and counts the reads that start afterwards.
type cancellingReader struct {
	mu          sync.Mutex
	size, after int64
	read        int64
	cancel      func()
	cancelled   bool
	late        int // reads started after the cancel
}

func (r *cancellingReader) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	if r.cancelled {
		r.late++
	}
	r.read += int64(len(p))
	if !r.cancelled && r.read >= r.after {
		r.cancelled = true
		r.cancel()
	}
	r.mu.Unlock()
	if off >= r.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.size-off)
	for i := range p[:n] {
		p[i] = byte(off + int64(i))
	}
	return int(n), nil
}

// TestCompressCancelled: an interrupt stops every block in flight within
// one read of its input, instead of finishing 24 MiB blocks first.
func TestCompressCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const jobs = 2
	r := &cancellingReader{size: 6 * xzBlockSize, after: 1 << 20, cancel: cancel}
	err := writeXZ(ctx, io.Discard, r, nil, blockItems(r.size, 0), xz.CRC64, xzfile.Fast, jobs, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("writeXZ after an interrupt = %v; want context.Canceled", err)
	}
	if r.late > jobs {
		t.Errorf("%d reads started after the interrupt; want at most one per worker (%d)", r.late, jobs)
	}
	if r.read > 4<<20 {
		t.Errorf("%d bytes read in all; the interrupt came after 1 MiB", r.read)
	}
}

// TestCompressWriteError: a failing output stops the workers and is the
// error returned.
func TestCompressWriteError(t *testing.T) {
	data := bytes.Repeat([]byte("pibake "), 3*xzBlockSize/7)
	err := writeXZ(context.Background(), failingWriter{}, bytes.NewReader(data), nil, blockItems(int64(len(data)), 0), xz.CRC64, xzfile.Fast, 2, nil)
	if !errors.Is(err, errDiskFull) {
		t.Errorf("writeXZ to a failing writer = %v; want its error", err)
	}
}

var errDiskFull = errors.New("no space left on device")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errDiskFull }

func TestMergeExtents(t *testing.T) {
	got := mergeExtents([][2]int64{{0, 10}, {20, 30}, {50, 60}}, [][2]int64{{5, 12}, {30, 40}, {70, 80}})
	want := [][2]int64{{0, 12}, {20, 40}, {50, 60}, {70, 80}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("mergeExtents = %v; want %v", got, want)
	}
}

// TestHoleBlocksSameBytes: a block that is a hole in the image is taken
// from the shared compressed zero block, and the .xz is byte for byte the
// one compressing the zeros gives (the same image written out in full,
// no holes), so holes never change what an image compresses to.
func TestHoleBlocksSameBytes(t *testing.T) {
	dir := t.TempDir()
	size := int64(2*xzBlockSize + 12345)
	sparseImg, fullImg := filepath.Join(dir, "sparse.img"), filepath.Join(dir, "full.img")
	data := bytes.Repeat([]byte("pibake "), 1000)
	f, _ := os.Create(sparseImg)
	f.Truncate(size)
	f.WriteAt(data, xzBlockSize+100) // blocks 0 and 2 are holes
	f.Close()
	full := make([]byte, size)
	copy(full[xzBlockSize+100:], data)
	os.WriteFile(fullImg, full, 0o644)
	sums := map[string][]byte{}
	for _, p := range []string{sparseImg, fullImg} {
		out, _ := os.Create(p + ".xz")
		if _, err := Compress(context.Background(), p, out, nil, "", 0, 2, nil); err != nil {
			t.Fatal(err)
		}
		sums[p], _ = os.ReadFile(p + ".xz")
	}
	if !bytes.Equal(sums[sparseImg], sums[fullImg]) {
		t.Error("the .xz of a sparse image differs from the .xz of the same bytes without holes")
	}
	in, _ := os.Open(sparseImg)
	defer in.Close()
	items := blockItems(size, 0)
	markHoles(in, items)
	if !items[0].hole || items[1].hole || !items[2].hole {
		t.Errorf("holes marked %v %v %v; want true false true", items[0].hole, items[1].hole, items[2].hole)
	}
}
