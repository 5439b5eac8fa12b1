// Package xzstream reads and writes the container of an xz file (stream
// header, index, footer; https://tukaani.org/xz/xz-file-format.txt), the
// part that lets pibake decode and encode the blocks of a multi-block
// stream independently, in parallel. The blocks themselves are LZMA2 and
// left to xz libraries.
package xzstream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// ErrCorrupt marks a damaged or truncated xz file.
var ErrCorrupt = errors.New("corrupt or truncated xz file")

// Magic bytes of the stream header and footer.
var (
	HeaderMagic = []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}
	FooterMagic = []byte{'Y', 'Z'}
)

// Record is one block's entry in a stream index.
type Record struct {
	Unpadded     uint64 // block size without its padding
	Uncompressed uint64
}

// Padded is the block's size in the file: padded to four bytes.
func (r Record) Padded() int64 { return int64((r.Unpadded + 3) &^ 3) }

// Trailer returns the index listing records and the stream footer, which
// end a stream whose header carries the stream flags flags (bytes 6-7).
func Trailer(flags []byte, records []Record) []byte {
	index := []byte{0}
	index = binary.AppendUvarint(index, uint64(len(records)))
	for _, r := range records {
		index = binary.AppendUvarint(index, r.Unpadded)
		index = binary.AppendUvarint(index, r.Uncompressed)
	}
	for (len(index)+4)%4 != 0 {
		index = append(index, 0)
	}
	index = binary.LittleEndian.AppendUint32(index, crc32.ChecksumIEEE(index))
	footer := make([]byte, 12)
	binary.LittleEndian.PutUint32(footer[4:], uint32(len(index)/4-1))
	copy(footer[8:10], flags)
	binary.LittleEndian.PutUint32(footer, crc32.ChecksumIEEE(footer[4:10]))
	copy(footer[10:], FooterMagic)
	return append(index, footer...)
}

// IndexSize reads a stream footer: it checks it and returns the size of
// the index before it.
func IndexSize(footer []byte) (int64, error) {
	if len(footer) != 12 || string(footer[10:]) != string(FooterMagic) || crc32.ChecksumIEEE(footer[4:10]) != binary.LittleEndian.Uint32(footer) {
		return 0, fmt.Errorf("%w: bad stream footer (the download may be cut short)", ErrCorrupt)
	}
	return (int64(binary.LittleEndian.Uint32(footer[4:])) + 1) * 4, nil
}

// ParseIndex reads a stream index.
func ParseIndex(index []byte) ([]Record, error) {
	bad := func(what string) error { return fmt.Errorf("%w: bad index (%s)", ErrCorrupt, what) }
	n := len(index)
	if n < 8 || index[0] != 0 {
		return nil, bad("indicator")
	}
	if crc32.ChecksumIEEE(index[:n-4]) != binary.LittleEndian.Uint32(index[n-4:]) {
		return nil, bad("checksum")
	}
	body := index[1 : n-4]
	count, k := binary.Uvarint(body)
	if k <= 0 || count > uint64(len(body)) {
		return nil, bad("record count")
	}
	body = body[k:]
	records := make([]Record, 0, count)
	for i := uint64(0); i < count; i++ {
		unpadded, k1 := binary.Uvarint(body)
		if k1 <= 0 {
			return nil, bad("record")
		}
		uncompressed, k2 := binary.Uvarint(body[k1:])
		if k2 <= 0 || unpadded == 0 || unpadded > 1<<62 || uncompressed > 1<<62 {
			return nil, bad("record")
		}
		body = body[k1+k2:]
		records = append(records, Record{Unpadded: unpadded, Uncompressed: uncompressed})
	}
	for _, b := range body {
		if b != 0 {
			return nil, bad("padding")
		}
	}
	return records, nil
}

// CheckHeader checks a stream header.
func CheckHeader(header []byte) error {
	if len(header) != 12 || string(header[:6]) != string(HeaderMagic) || crc32.ChecksumIEEE(header[6:8]) != binary.LittleEndian.Uint32(header[8:]) {
		return fmt.Errorf("%w: bad stream header", ErrCorrupt)
	}
	return nil
}
