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
	c := []byte{byteAt(t, path, at) ^ mask}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(c, at); err != nil {
		t.Fatal(err)
	}
}

// byteAt is the byte at offset at of the file at path.
func byteAt(t testing.TB, path string, at int64) byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := make([]byte, 1)
	if _, err := f.ReadAt(c, at); err != nil {
		t.Fatal(err)
	}
	return c[0]
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

// HexSafeMask is the mask for Flip that changes the byte at offset at of
// the file at path and, where that byte is a lower-case hex digit, keeps
// it one: '0' becomes '1' and every other digit '0'. Any other byte gets
// 0x01.
func HexSafeMask(t testing.TB, path string, at int64) byte {
	t.Helper()
	switch c := byteAt(t, path, at); {
	case c == '0':
		return '0' ^ '1'
	case c >= '1' && c <= '9', c >= 'a' && c <= 'f':
		return c ^ '0'
	}
	return 0x01
}
