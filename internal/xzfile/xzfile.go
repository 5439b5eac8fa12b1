package xzfile

import (
	"bufio"
	"container/list"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/pibake/pibake/internal/sparse"
	"github.com/therootcompany/xz"
)

// File reads the image inside an .img.xz at any offset without
// decompressing it to disk, for `pibake inspect`: a read decodes the block
// of the xz stream that holds it, from the block's start, and keeps the
// chunks it passes in a small cache. Raspberry Pi OS and pibake write
// multi-block streams (blocks of 24 MiB up to a few hundred), so a read
// decodes at most one block; a single-block .xz is decoded from its start
// for every read behind what is cached.
type File struct {
	f      *os.File
	name   string
	blocks []xzBlock
	size   int64
	pos    int64 // for Read and Seek

	// cache holds decoded chunks by key; lru orders them, least recently
	// used at the back. An all-zero chunk is stored as nil: images are
	// mostly zeros.
	cache map[chunkKey]*list.Element
	lru   *list.List
	// dec is a decoder left where the last read stopped, so that reads
	// moving forward through a block do not start it again.
	dec *blockDecoder
}

// xzChunk is the cache's unit; xzCacheChunks bound its memory.
const (
	xzChunk       = 1 << 20
	xzCacheChunks = 64
)

type chunkKey struct {
	block int
	index int64 // chunk index within the block
}

type cached struct {
	key  chunkKey
	data []byte // nil: all zeros
	n    int
}

type blockDecoder struct {
	block int
	zr    io.Reader
	at    int64 // decoded bytes of the block so far
}

// Open opens an .xz file for reading its content at random offsets.
func Open(path string) (*File, error) {
	f, blocks, size, err := openIndexed(path)
	if err != nil {
		return nil, err
	}
	return &File{f: f, name: filepath.Base(path), blocks: blocks, size: size, cache: map[chunkKey]*list.Element{}, lru: list.New()}, nil
}

// Size is the size of the decompressed content.
func (x *File) Size() int64 { return x.size }

// Blocks is how many xz blocks the file has.
func (x *File) Blocks() int { return len(x.blocks) }

// ReadAt reads decompressed content.
func (x *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", x.name, off)
	}
	n := 0
	for n < len(p) {
		if off >= x.size {
			return n, io.EOF
		}
		bi := sort.Search(len(x.blocks), func(i int) bool { return x.blocks[i].outOffset+x.blocks[i].uncompressed > off })
		b := x.blocks[bi]
		inBlock := off - b.outOffset
		c, err := x.chunk(chunkKey{block: bi, index: inBlock / xzChunk})
		if err != nil {
			return n, err
		}
		from := int(inBlock % xzChunk)
		if from >= c.n {
			return n, fmt.Errorf("%w: block at byte %d ends early", ErrCorrupt, b.offset)
		}
		k := min(len(p)-n, c.n-from)
		if c.data == nil {
			clear(p[n : n+k])
		} else {
			copy(p[n:n+k], c.data[from:from+k])
		}
		n += k
		off += int64(k)
	}
	return n, nil
}

// chunk returns one decoded chunk, from the cache or by decoding.
func (x *File) chunk(key chunkKey) (*cached, error) {
	if e, ok := x.cache[key]; ok {
		x.lru.MoveToFront(e)
		return e.Value.(*cached), nil
	}
	b := x.blocks[key.block]
	want := key.index * xzChunk
	if d := x.dec; d == nil || d.block != key.block || d.at > want {
		zr, err := xz.NewReader(bufio.NewReaderSize(oneBlockStream(x.f, b), 1<<20), 0)
		if err != nil {
			return nil, fmt.Errorf("%w: block at byte %d: %v", ErrCorrupt, b.offset, err)
		}
		x.dec = &blockDecoder{block: key.block, zr: zr}
	}
	d := x.dec
	buf := make([]byte, xzChunk)
	for {
		n, err := io.ReadFull(d.zr, buf[:min(int64(xzChunk), b.uncompressed-d.at)])
		if err != nil || n == 0 {
			x.dec = nil
			return nil, fmt.Errorf("%w: block at byte %d, at %d of its %d bytes: %v", ErrCorrupt, b.offset, d.at, b.uncompressed, err)
		}
		c := &cached{key: chunkKey{block: key.block, index: d.at / xzChunk}, n: n}
		if !sparse.IsZero(buf[:n]) {
			c.data = append([]byte(nil), buf[:n]...)
		}
		d.at += int64(n)
		if d.at == b.uncompressed {
			// The end of the block: reading on makes the decoder check
			// the block's check value (CRC or SHA-256).
			x.dec = nil
			var one [1]byte
			if k, err := d.zr.Read(one[:]); k != 0 || !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: block at byte %d fails its check (%v)", ErrCorrupt, b.offset, err)
			}
		}
		x.put(c)
		if c.key == key {
			return c, nil
		}
	}
}

func (x *File) put(c *cached) {
	if e, ok := x.cache[c.key]; ok {
		x.lru.MoveToFront(e)
		return
	}
	x.cache[c.key] = x.lru.PushFront(c)
	for x.lru.Len() > xzCacheChunks {
		old := x.lru.Back()
		x.lru.Remove(old)
		delete(x.cache, old.Value.(*cached).key)
	}
}

// Read reads from the current position.
func (x *File) Read(p []byte) (int, error) {
	n, err := x.ReadAt(p, x.pos)
	x.pos += int64(n)
	return n, err
}

// Seek sets the position for Read.
func (x *File) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += x.pos
	case io.SeekEnd:
		offset += x.size
	default:
		return 0, fmt.Errorf("seek: bad whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek: negative position %d", offset)
	}
	x.pos = offset
	return offset, nil
}

// Stat describes the decompressed content: its size, the .xz file's name
// and times.
func (x *File) Stat() (fs.FileInfo, error) {
	fi, err := x.f.Stat()
	if err != nil {
		return nil, err
	}
	return xzInfo{FileInfo: fi, size: x.size}, nil
}

// Close closes the .xz file.
func (x *File) Close() error { return x.f.Close() }

type xzInfo struct {
	fs.FileInfo
	size int64
}

func (i xzInfo) Size() int64 { return i.size }
