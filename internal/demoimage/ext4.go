package demoimage

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"path"
	"slices"
	"strings"
)

// A minimal ext4 writer: one block group of 4 KiB blocks, extents, file
// types in directory entries, linear directories, metadata checksums (as
// Raspberry Pi OS has them, and as go-diskfs wants them), no journal. Every field is a function of the files and the Layout, so the
// bytes are the same on every run (mkfs.ext4 stamps the clock and random
// UUIDs and hash seeds; go-diskfs's ext4.Create does too). Field offsets
// are those of the kernel's Documentation/filesystems/ext4 (super.rst,
// group_descr.rst, inodes.rst, ifork.rst, directory.rst) and
// fs/ext4/ext4.h; e2fsck -fn checks the result in the tests.

const (
	blockSize      = 4096
	inodeSize      = 256
	blocksPerGroup = 8 * blockSize // one block bitmap's worth
	firstIno       = 11            // inodes 1-10 are reserved
	lostFoundIno   = 11
	rootIno        = 2

	featureIncompatFiletype   = 0x2
	featureIncompatExtents    = 0x40
	featureROCompatSparse     = 0x1
	featureROCompatLargeFile  = 0x2
	featureROCompatDirNlink   = 0x20
	featureROCompatExtraIsize = 0x40
	featureROCompatMetaCsum   = 0x400
	dirTailSize               = 12
	extentsFlag               = 0x80000
	modeDir                   = 0x4000
	modeFile                  = 0x8000
)

// Layout is the ext4 file system's identity and size.
type Layout struct {
	Blocks   uint32 // total 4 KiB blocks, at most one group (32768)
	Inodes   uint32 // inodes, a multiple of 16
	Label    string
	UUID     [16]byte
	HashSeed [16]byte
	Time     uint32 // every timestamp: mkfs, write, each inode
}

// fsNode is a file or directory of the tree being written.
type fsNode struct {
	name     string
	ino      uint32
	data     []byte // a file's content, a directory's entries once laid out
	exec     bool
	dir      bool
	children []*fsNode
	parent   *fsNode
	start    uint32 // first data block
	nblocks  uint32
}

// makeExt4 lays out files (by slash path; directories are implied) as an
// ext4 file system and returns its bytes up to the last block used: the
// rest of the partition reads as zeros.
func makeExt4(l Layout, files map[string]string) ([]byte, error) {
	if l.Blocks > blocksPerGroup || l.Inodes%16 != 0 || l.Inodes == 0 {
		return nil, fmt.Errorf("ext4 layout %d blocks, %d inodes: want at most %d blocks and a multiple of 16 inodes", l.Blocks, l.Inodes, blocksPerGroup)
	}
	root := tree(files)
	nodes := number(root)
	if uint32(len(nodes))+firstIno-1 > l.Inodes {
		return nil, fmt.Errorf("ext4: %d files and directories need more than %d inodes", len(nodes), l.Inodes)
	}
	tableBlocks := l.Inodes * inodeSize / blockSize
	next := 4 + tableBlocks // superblock, descriptors, two bitmaps, the table
	for _, n := range nodes {
		if n.dir {
			n.data = dirBlocks(n)
		}
		n.nblocks = uint32((len(n.data) + blockSize - 1) / blockSize)
		if n.nblocks > 0 {
			n.start, next = next, next+n.nblocks
		}
	}
	if next > l.Blocks {
		return nil, fmt.Errorf("ext4: %d blocks of files do not fit in %d", next, l.Blocks)
	}
	img := make([]byte, int(next)*blockSize)
	dirs := 0
	for _, n := range nodes {
		copy(img[int(n.start)*blockSize:], n.data)
		writeInode(img[(4*blockSize)+int(n.ino-1)*inodeSize:][:inodeSize], n, l.Time)
		if n.dir {
			dirs++
		}
	}
	usedInodes := uint32(len(nodes)) + firstIno - 1 - 1 // root is inode 2, among the reserved
	writeBitmap(img[2*blockSize:][:blockSize], next, l.Blocks)
	writeBitmap(img[3*blockSize:][:blockSize], usedInodes, l.Inodes)
	writeSuper(img[1024:2048], l, l.Blocks-next, l.Inodes-usedInodes)
	gd := img[blockSize:][:32]
	le := binary.LittleEndian
	le.PutUint32(gd[0x0:], 2)
	le.PutUint32(gd[0x4:], 3)
	le.PutUint32(gd[0x8:], 4)
	le.PutUint16(gd[0xC:], uint16(l.Blocks-next))
	le.PutUint16(gd[0xE:], uint16(l.Inodes-usedInodes))
	le.PutUint16(gd[0x10:], uint16(dirs))
	checksum(img, l, nodes)
	return img, nil
}

// checksum writes the metadata checksums (crc32c, seeded with the UUID's):
// directory blocks' tails, inodes, bitmaps, the group descriptor, the
// superblock, in that order since each covers the ones before (the
// kernel's fs/ext4/{dir,inode,bitmap,super}.c *_csum_set).
func checksum(img []byte, l Layout, nodes []*fsNode) {
	le := binary.LittleEndian
	seed := crc32c(^uint32(0), l.UUID[:])
	for _, n := range nodes {
		var num [8]byte // the inode number, then its generation (0)
		le.PutUint32(num[:], n.ino)
		iseed := crc32c(seed, num[:])
		if n.dir {
			for b := range n.nblocks {
				blk := img[int(n.start+b)*blockSize:][:blockSize]
				le.PutUint32(blk[blockSize-4:], crc32c(iseed, blk[:blockSize-dirTailSize]))
			}
		}
		in := img[4*blockSize+int(n.ino-1)*inodeSize:][:inodeSize]
		c := crc32c(iseed, in)
		le.PutUint16(in[0x7C:], uint16(c))
		le.PutUint16(in[0x82:], uint16(c>>16))
	}
	gd := img[blockSize:][:32]
	le.PutUint16(gd[0x18:], uint16(crc32c(seed, img[2*blockSize:][:blockSize])))
	le.PutUint16(gd[0x1A:], uint16(crc32c(seed, img[3*blockSize:][:l.Inodes/8])))
	var group [4]byte // group 0
	le.PutUint16(gd[0x1E:], uint16(crc32c(crc32c(seed, group[:]), gd)))
	sb := img[1024:2048]
	le.PutUint32(sb[0x3FC:], crc32c(^uint32(0), sb[:0x3FC]))
}

// crc32c is the kernel's crc32c_le: the Castagnoli CRC without the
// inversions hash/crc32 adds before and after.
func crc32c(crc uint32, p []byte) uint32 {
	return ^crc32.Update(^crc, castagnoli, p)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// tree makes the directory tree of files, with lost+found, children in
// name order.
func tree(files map[string]string) *fsNode {
	root := &fsNode{dir: true}
	root.parent = root
	dirOf := map[string]*fsNode{"": root}
	var mkdir func(p string) *fsNode
	mkdir = func(p string) *fsNode {
		if d, ok := dirOf[p]; ok {
			return d
		}
		parent := mkdir(strings.TrimSuffix(path.Dir(p), "."))
		d := &fsNode{name: path.Base(p), dir: true, parent: parent}
		parent.children = append(parent.children, d)
		dirOf[p] = d
		return d
	}
	mkdir("lost+found")
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		content := files[name]
		parent := mkdir(strings.TrimSuffix(path.Dir(name), "."))
		parent.children = append(parent.children, &fsNode{name: path.Base(name), data: []byte(content), exec: strings.HasPrefix(content, "#!"), parent: parent})
	}
	return root
}

// number gives every node its inode, root 2 and lost+found 11 as mke2fs
// does, the others from 12 in breadth-first name order, and returns them
// in inode order.
func number(root *fsNode) []*fsNode {
	root.ino = rootIno
	nodes := []*fsNode{root}
	ino := uint32(firstIno + 1)
	for queue := []*fsNode{root}; len(queue) > 0; queue = queue[1:] {
		d := queue[0]
		slices.SortFunc(d.children, func(a, b *fsNode) int { return strings.Compare(a.name, b.name) })
		for _, c := range d.children {
			if d == root && c.name == "lost+found" {
				c.ino = lostFoundIno
			} else {
				c.ino, ino = ino, ino+1
			}
			nodes = append(nodes, c)
			if c.dir {
				queue = append(queue, c)
			}
		}
	}
	slices.SortFunc(nodes, func(a, b *fsNode) int { return int(a.ino) - int(b.ino) })
	return nodes
}

// dirBlocks are a directory's linear entries (".", "..", then its
// children), none crossing a block, the last of each block stretched to
// its end.
func dirBlocks(d *fsNode) []byte {
	type entry struct {
		ino  uint32
		name string
		typ  byte
	}
	entries := []entry{{d.ino, ".", 2}, {d.parent.ino, "..", 2}}
	for _, c := range d.children {
		typ := byte(1)
		if c.dir {
			typ = 2
		}
		entries = append(entries, entry{c.ino, c.name, typ})
	}
	var out []byte
	block := make([]byte, 0, blockSize)
	last := -1 // offset of the block's last entry
	flush := func() {
		// The last entry reaches the tail, which checksum fills in.
		binary.LittleEndian.PutUint16(block[last+4:], uint16(blockSize-dirTailSize-last))
		block = block[:blockSize]
		binary.LittleEndian.PutUint16(block[blockSize-dirTailSize+4:], dirTailSize)
		block[blockSize-dirTailSize+7] = 0xDE
		out = append(out, block...)
		block, last = make([]byte, 0, blockSize), -1
	}
	for _, e := range entries {
		n := (8 + len(e.name) + 3) &^ 3
		if len(block)+n > blockSize-dirTailSize {
			flush()
		}
		last = len(block)
		rec := make([]byte, n)
		binary.LittleEndian.PutUint32(rec[0:], e.ino)
		binary.LittleEndian.PutUint16(rec[4:], uint16(n))
		rec[6], rec[7] = byte(len(e.name)), e.typ
		copy(rec[8:], e.name)
		block = append(block, rec...)
	}
	flush()
	return out
}

// writeInode writes n's inode: mode, size, times, links, blocks and one
// extent (depth 0) over its contiguous blocks.
func writeInode(b []byte, n *fsNode, t uint32) {
	le := binary.LittleEndian
	mode, links := uint16(modeFile|0o644), uint16(1)
	if n.exec {
		mode = modeFile | 0o755
	}
	if n.dir {
		mode, links = modeDir|0o755, 2
		for _, c := range n.children {
			if c.dir {
				links++
			}
		}
	}
	le.PutUint16(b[0x0:], mode)
	le.PutUint32(b[0x4:], uint32(len(n.data)))
	for _, off := range []int{0x8, 0xC, 0x10} { // atime, ctime, mtime
		le.PutUint32(b[off:], t)
	}
	le.PutUint16(b[0x1A:], links)
	le.PutUint32(b[0x1C:], n.nblocks*blockSize/512)
	le.PutUint32(b[0x20:], extentsFlag)
	// i_block: the extent header, then at most 4 extents.
	le.PutUint16(b[0x28:], 0xF30A)
	le.PutUint16(b[0x2C:], 4)
	if n.nblocks > 0 {
		le.PutUint16(b[0x2A:], 1)
		le.PutUint32(b[0x34:], 0)
		le.PutUint16(b[0x38:], uint16(n.nblocks))
		le.PutUint32(b[0x3C:], n.start)
	}
	le.PutUint16(b[0x80:], 32) // i_extra_isize
	le.PutUint32(b[0x90:], t)  // i_crtime
}

// writeBitmap marks the first used of n items in use, and the bitmap's
// padding past n, as e2fsck wants.
func writeBitmap(b []byte, used, n uint32) {
	for i := uint32(0); i < 8*blockSize; i++ {
		if i < used || i >= n {
			b[i/8] |= 1 << (i % 8)
		}
	}
}

// writeSuper writes the superblock.
func writeSuper(b []byte, l Layout, freeBlocks, freeInodes uint32) {
	le := binary.LittleEndian
	for off, v := range map[int]uint32{
		0x0: l.Inodes, 0x4: l.Blocks, 0xC: freeBlocks, 0x10: freeInodes, 0x14: 0,
		0x18: 2, 0x1C: 2, 0x20: blocksPerGroup, 0x24: blocksPerGroup, 0x28: l.Inodes,
		0x30: l.Time, 0x40: l.Time, 0x4C: 1, 0x54: firstIno,
		0x60:  featureIncompatFiletype | featureIncompatExtents,
		0x64:  featureROCompatSparse | featureROCompatLargeFile | featureROCompatDirNlink | featureROCompatExtraIsize | featureROCompatMetaCsum,
		0x108: l.Time,
	} {
		le.PutUint32(b[off:], v)
	}
	le.PutUint16(b[0x36:], 0xFFFF) // s_max_mnt_count: -1
	le.PutUint16(b[0x38:], 0xEF53)
	le.PutUint16(b[0x3A:], 1) // clean
	le.PutUint16(b[0x3C:], 1) // errors: continue
	le.PutUint16(b[0x58:], inodeSize)
	copy(b[0x68:0x78], l.UUID[:])
	copy(b[0x78:0x88], l.Label)
	copy(b[0xEC:0xFC], l.HashSeed[:])
	b[0xFC] = 1                 // s_def_hash_version: half_md4
	le.PutUint16(b[0x15C:], 32) // s_min_extra_isize
	le.PutUint16(b[0x15E:], 32) // s_want_extra_isize
	le.PutUint32(b[0x160:], 1)  // s_flags: signed directory hash
	// s_checksum_type: crc32c, the only kind (mke2fs sets it with or
	// without metadata_csum; go-diskfs refuses any other).
	b[0x175] = 1
}
