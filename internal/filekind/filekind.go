// Package filekind says what a file is by its first bytes: an xz stream,
// or one of the other compressed formats images are downloaded in. A name
// says nothing (raspios_lite_arm64_latest has no .xz, and anyone may name
// a raw image x.img.xz).
package filekind

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// xzMagic starts every xz stream.
const xzMagic = "\xfd7zXZ\x00"

// archives are the compressed formats people download images in that
// pibake does not read, by their magic numbers.
var archives = []struct{ magic, name, how string }{
	{"PK\x03\x04", "zip archive", "unzip"},
	{"\x1f\x8b", "gzip file", "gunzip -k"},
	{"\x28\xb5\x2f\xfd", "zstd file", "unzstd"},
	{"7z\xbc\xaf\x27\x1c", "7z archive", "7z x"},
	{"BZh", "bzip2 file", "bunzip2 -k"},
}

// head is a file's first n bytes, fewer if it is shorter.
func head(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	got, err := io.ReadFull(f, b)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	return b[:got], err
}

// IsXZ says whether a file is xz-compressed.
func IsXZ(path string) (bool, error) {
	b, err := head(path, len(xzMagic))
	return string(b) == xzMagic, err
}

// RefuseArchive refuses an image compressed in a way pibake does not
// read, naming the format and the command that decompresses it.
func RefuseArchive(path string) error {
	b, err := head(path, 8)
	if err != nil {
		return fmt.Errorf("image source: %w", err)
	}
	for _, a := range archives {
		if strings.HasPrefix(string(b), a.magic) {
			return fmt.Errorf("image source %s is a %s: pibake reads raw images and .xz; decompress it first (%s %s) and give the .img", path, a.name, a.how, path)
		}
	}
	return nil
}
