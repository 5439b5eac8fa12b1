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

// CheckSize is the size of a block's check field for the check type
// (xz-file-format.txt §3.4), or -1 for a type pibake does not write.
func CheckSize(check byte) int {
	switch check {
	case 0x00:
		return 0
	case 0x01:
		return 4
	case 0x04:
		return 8
	case 0x0A:
		return 32
	}
	return -1
}

// WithSizes rewrites a block (header, compressed data, padding, check, as
// in the file; its index record says unpadded and uncompressed) so that
// its header states its compressed and uncompressed sizes, and returns it
// with its new unpadded size. XZ Utils' decoder (xz -T0, 5.4 and later)
// decodes a block in parallel with others only when its header has both,
// as its multi-threaded encoder writes them; xz --threads=1 and
// ulikunitz/xz write neither (§3.1.2-3.1.4). The compressed data and the
// check are kept byte for byte.
func WithSizes(block []byte, unpadded, uncompressed uint64, checkSize int) ([]byte, uint64, error) {
	bad := fmt.Errorf("%w: bad block header", ErrCorrupt)
	if len(block) < 8 || block[0] == 0 {
		return nil, 0, bad
	}
	hsize := (int(block[0]) + 1) * 4
	if len(block) < hsize || crc32.ChecksumIEEE(block[:hsize-4]) != binary.LittleEndian.Uint32(block[hsize-4:hsize]) {
		return nil, 0, bad
	}
	flags := block[1]
	if flags&0xC0 == 0xC0 {
		return block, unpadded, nil
	}
	if flags&0x3C != 0 || unpadded < uint64(hsize+checkSize) {
		return nil, 0, bad
	}
	pos := 2
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} {
		if !present {
			continue
		}
		_, n := binary.Uvarint(block[pos : hsize-4])
		if n <= 0 {
			return nil, 0, bad
		}
		pos += n
	}
	filters := pos
	for i := 0; i <= int(flags&3); i++ { // filter ID, properties size, properties
		_, n := binary.Uvarint(block[pos : hsize-4])
		if n <= 0 {
			return nil, 0, bad
		}
		size, m := binary.Uvarint(block[pos+n : hsize-4])
		if m <= 0 || uint64(hsize-4-pos-n-m) < size {
			return nil, 0, bad
		}
		pos += n + m + int(size)
	}
	compressed := unpadded - uint64(hsize+checkSize)
	h := []byte{0, flags | 0xC0}
	h = binary.AppendUvarint(h, compressed)
	h = binary.AppendUvarint(h, uncompressed)
	h = append(h, block[filters:pos]...)
	for len(h)%4 != 0 {
		h = append(h, 0)
	}
	h[0] = byte(len(h) / 4) // (header size / 4) - 1, with the CRC32 to come
	h = binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(h))
	return append(h, block[hsize:]...), uint64(len(h)) + compressed + uint64(checkSize), nil
}
