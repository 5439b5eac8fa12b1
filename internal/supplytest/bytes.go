package supplytest

import (
	"bytes"
	"os"
	"testing"
)

// Flip changes the byte at offset at of the file at path by XOR with
// mask: the tampering a verification must name.
func Flip(t testing.TB, path string, at int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := make([]byte, 1)
	if _, err := f.ReadAt(c, at); err != nil {
		t.Fatal(err)
	}
	c[0] ^= mask
	if _, err := f.WriteAt(c, at); err != nil {
		t.Fatal(err)
	}
}

// Offset finds data in the file at path between offsets from and to.
func Offset(t testing.TB, path string, data []byte, from, to int64) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, to-from)
	n, _ := f.ReadAt(buf, from)
	i := bytes.Index(buf[:n], data)
	if i < 0 {
		t.Fatalf("%q not found in %s", data, path)
	}
	return from + int64(i)
}
