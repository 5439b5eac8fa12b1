package nodeimage

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pibake/pibake/internal/bytesize"
	"github.com/pibake/pibake/internal/sparse"
)

// BlockSize is bmaptool's default block size.
const BlockSize = 4096

// RangeSums remembers the SHA-256 of block ranges of a base image: a node
// image's ranges outside its boot partition are the base's, so their sums
// are computed once per base, not once per node.
type RangeSums map[[2]int64]string

// mappedRanges are the file's data extents, widened to whole blocks and
// merged: first and last block, inclusive.
func mappedRanges(f *os.File, size int64) [][2]int64 {
	return BlockRanges(sparse.Extents(f, 0, size))
}

// BlockRanges widens data extents (ascending) to whole blocks and merges
// them: the block map's ranges, and flash's.
func BlockRanges(extents [][2]int64) [][2]int64 {
	var ranges [][2]int64
	for _, e := range extents {
		first, last := e[0]/BlockSize, (e[1]-1)/BlockSize
		if n := len(ranges); n > 0 && first <= ranges[n-1][1]+1 {
			ranges[n-1][1] = max(ranges[n-1][1], last)
			continue
		}
		ranges = append(ranges, [2]int64{first, last})
	}
	return ranges
}

// Bmap returns the block map of an image in bmaptool's format 2.0, so
// `bmaptool copy` writes only the mapped blocks and verifies each range
// against its SHA-256. Mapped blocks are the image's data extents (holes
// are not copied). Ranges found in known are not hashed again; every range
// hashed is added to learn (when not nil).
func Bmap(imagePath string, known, learn RangeSums) ([]byte, error) {
	f, err := os.Open(imagePath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	blocks := (size + BlockSize - 1) / BlockSize

	ranges := mappedRanges(f, size)
	var body strings.Builder
	mapped := int64(0)
	buf := make([]byte, 1<<20)
	for _, r := range ranges {
		mapped += r[1] - r[0] + 1
		sum, ok := known[r]
		if !ok {
			h := sha256.New()
			start, end := r[0]*BlockSize, min((r[1]+1)*BlockSize, size)
			if _, err := io.CopyBuffer(h, io.NewSectionReader(f, start, end-start), buf); err != nil {
				return nil, fmt.Errorf("bmap %s: %w", imagePath, err)
			}
			sum = hex.EncodeToString(h.Sum(nil))
			if learn != nil {
				learn[r] = sum
			}
		}
		span := fmt.Sprint(r[0])
		if r[1] != r[0] {
			span = fmt.Sprintf("%d-%d", r[0], r[1])
		}
		fmt.Fprintf(&body, "        <Range chksum=\"%s\"> %s </Range>\n", sum, span)
	}

	doc := bmapDoc(size, blocks, mapped, body.String())
	sum := sha256.Sum256([]byte(doc))
	return []byte(strings.Replace(doc, bmapZeros, hex.EncodeToString(sum[:]), 1)), nil
}

// bmapZeros stands for the block map's own checksum while it is computed.
const bmapZeros = "0000000000000000000000000000000000000000000000000000000000000000"

// bmapDoc is a block map in bmaptool's format 2.0 around its ranges
// (body), with bmapZeros for its own checksum.
func bmapDoc(size, blocks, mapped int64, body string) string {
	return fmt.Sprintf(`<?xml version="1.0" ?>
<!-- Block map of a pibake image: only the listed (mapped) blocks hold data
     and need to be written. Flash it with: bmaptool copy IMAGE DEVICE -->

<bmap version="2.0">
    <!-- Image size in bytes: %s -->
    <ImageSize> %d </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> %d </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> %d </BlocksCount>

    <!-- Count of mapped blocks: %s -->
    <MappedBlocksCount> %d </MappedBlocksCount>

    <!-- Type of checksum used in this file -->
    <ChecksumType> sha256 </ChecksumType>

    <!-- The checksum of this bmap file. When it is calculated, the value of
         the checksum has be zero (all ASCII "0" symbols).  -->
    <BmapFileChecksum> %s </BmapFileChecksum>

    <BlockMap>
%s    </BlockMap>
</bmap>
`, bytesize.Format(size), size, BlockSize, blocks, bytesize.Format(mapped*BlockSize), mapped, bmapZeros, body)
}
