package buildtest

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestContentSum: the same bytes give the same sum however the file's
// holes lie; a changed byte (in data or where another file has a hole), a
// moved one, a longer file of trailing zeros give another.
func TestContentSum(t *testing.T) {
	dir := t.TempDir()
	const size = 1 << 20
	write := func(name string, size int64, data map[int64][]byte) string {
		return writePieces(t, filepath.Join(dir, name), size, data)
	}
	sum := func(p string) string {
		s, err := ContentSum(p)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	dense := make([]byte, size)
	copy(dense[100:], "pibake")
	copy(dense[700<<10:], "node")
	base := sum(write("sparse", size, map[int64][]byte{100: []byte("pibake"), 700 << 10: []byte("node")}))
	tests := []struct {
		name string
		data map[int64][]byte
		size int64
		same bool
	}{
		{"the same bytes, zeros written around them", map[int64][]byte{0: make([]byte, 200<<10), 100: []byte("pibake"), 600 << 10: make([]byte, 200<<10), 700 << 10: []byte("node")}, size, true},
		{"the same bytes, every byte written", map[int64][]byte{0: dense}, size, true},
		{"a byte changed in data", map[int64][]byte{100: []byte("pibakf"), 700 << 10: []byte("node")}, size, false},
		{"a byte where the other has a hole", map[int64][]byte{100: []byte("pibake"), 700 << 10: []byte("node"), 300 << 10: {1}}, size, false},
		{"a byte moved", map[int64][]byte{101: []byte("pibake"), 700 << 10: []byte("node")}, size, false},
		{"longer by zeros", map[int64][]byte{100: []byte("pibake"), 700 << 10: []byte("node")}, size + 1, false},
	}
	for i, tt := range tests {
		got := sum(write(string(rune('a'+i)), tt.size, tt.data))
		if (got == base) != tt.same {
			t.Errorf("%s: same sum = %v; want %v", tt.name, got == base, tt.same)
		}
	}
	// Two data extents in one 64 KiB chunk, a hole block between them:
	// the chunk counts once.
	twoExtents := sum(write("two", size, map[int64][]byte{100: []byte("pi"), 20 << 10: []byte("bake")}))
	oneExtent := sum(write("one", size, map[int64][]byte{100: append(append([]byte("pi"), make([]byte, 20<<10-102)...), "bake"...)}))
	if twoExtents != oneExtent {
		t.Error("two data extents in one chunk: another sum than the same bytes in one extent")
	}
}

// writePieces makes a file of size bytes at p: data written at each
// offset in ascending order, a later write over an earlier one (a written
// run of zeros is data, not a hole), the rest a hole.
func writePieces(t *testing.T, p string, size int64, data map[int64][]byte) string {
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range slices.Sorted(maps.Keys(data)) {
		if _, err := f.WriteAt(data[off], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}
