package base

import (
	"io"
	"os"

	"github.com/pibake/pibake/internal/xzfile"
)

// The xz files themselves are internal/xzfile's; these names are the base
// image's, which the rest of pibake knows them by.

// XZBlock is one block of an xz file (see xzfile.Block).
type XZBlock = xzfile.Block

// XZFile reads the image inside an .img.xz at any offset (see xzfile.File).
type XZFile = xzfile.File

// XZBlocks lists the blocks of every stream of an xz file and the size of
// its decompressed content, from the stream indexes (no decoding).
func XZBlocks(r io.ReaderAt, size int64) ([]XZBlock, int64, error) { return xzfile.Blocks(r, size) }

// OpenXZBlocks opens an .xz file and reads its block index: the file
// (the caller closes it), its blocks and the decompressed size.
func OpenXZBlocks(path string) (*os.File, []XZBlock, int64, error) { return xzfile.OpenBlocks(path) }

// OpenXZ opens an .xz file for reading its content at random offsets.
func OpenXZ(path string) (*XZFile, error) { return xzfile.Open(path) }
