package nodeimage

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pibake/pibake/internal/files"
)

// sparseSource writes a 64 MiB file holding random data in two extents,
// one all-zero written extent, and holes everywhere else.
func sparseSource(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "src.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewSource(1))
	for _, e := range []struct{ off, n int64 }{{1 << 20, 2 << 20}, {40 << 20, 1 << 20}} {
		b := make([]byte, e.n)
		rnd.Read(b)
		if _, err := f.WriteAt(b, e.off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt(make([]byte, 1<<20), 50<<20); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestImageClone copies a sparse file in two ranges split inside a data
// extent, by each method: the copy is byte-identical, keeps the holes, and
// splitSum (head from the copy, tail from the source) is the copy's
// SHA-256. (The image's mode, 0600, is the output directory's part's:
// TestBuildEndToEnd checks it.)
func TestImageClone(t *testing.T) {
	src := sparseSource(t)
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	wantSum, _, err := files.SHA256(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	const split = 2 << 20 // inside the first data extent
	for _, method := range []Method{"copy_file_range", "read/write", "reflink"} {
		t.Run(string(method), func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "dst.img")
			c, err := openClone(create(t, dst), src, method == "reflink")
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case method != "reflink":
				c.method = method
			case c.method != "reflink":
				c.abort()
				t.Skip("this file system shares no blocks (no reflink); the copy paths above are what runs here")
			}
			if err := c.copyRange(context.Background(), 0, split); err != nil {
				t.Fatal(err)
			}
			if err := c.copyRange(context.Background(), split, c.size); err != nil {
				t.Fatal(err)
			}
			if err := c.finish(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("the copy differs from the source")
			}
			fi, err := os.Stat(dst)
			if err != nil {
				t.Fatal(err)
			}
			// 3 MiB of data plus 1 MiB of written zeros in the source; a
			// copy that filled the holes would hold 64 MiB.
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 > 5<<20 {
				t.Errorf("the copy holds %d bytes on disk; want the holes kept (≤ 5 MiB)", st.Blocks*512)
			}
			sum, err := splitSum(context.Background(), dst, src, split, c.size, nil)
			if err != nil {
				t.Fatal(err)
			}
			if sum != wantSum {
				t.Errorf("splitSum = %s; want the source's %s", sum, wantSum)
			}
		})
	}
}

func TestImageCloneCancelled(t *testing.T) {
	src := sparseSource(t)
	dst := filepath.Join(t.TempDir(), "dst.img")
	c, err := openClone(create(t, dst), src, false) // a reflink is complete at once
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.copyRange(ctx, 0, c.size); !errors.Is(err, context.Canceled) {
		t.Errorf("copyRange after cancel = %v; want context.Canceled", err)
	}
	c.abort()
	// Closed: the caller removes the file (the output directory's part).
	if _, err := c.out.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after abort = %v; want os.ErrClosed", err)
	}
}

// create makes a new, empty file for a clone, as the output directory's
// parts are made.
func create(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
