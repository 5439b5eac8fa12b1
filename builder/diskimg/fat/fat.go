// Package fat is pibake's own small reader and fixer of a FAT32 boot
// partition: its layout, the repairs after go-diskfs writes, where new
// clusters go (Steer) and what owns a byte of it (Owners).
package fat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Volume is pibake's own small reader and fixer for a FAT32 boot
// partition. go-diskfs does the file writes; this layer accounts for free
// space before them and repairs what go-diskfs v1.9.4 leaves behind
// (found with fsck.fat: a wrong ".." in sub-directories of the root, a stale FSInfo
// free count), so that fsck.fat stays silent.
type Volume struct {
	rw                io.ReaderAt
	start             int64 // byte offset of the partition
	bytesPerSector    int64
	sectorsPerCluster int64
	reservedSectors   int64
	numFATs           int64
	fatSectors        int64
	totalSectors      int64
	rootCluster       uint32
	fsInfoSector      int64
	backupBootSector  int64
	label             string
}

const (
	fatEntryMask = 0x0FFFFFFF
	fatEOC       = 0x0FFFFFF8
	fatBad       = 0x0FFFFFF7
	dirEntrySize = 32
	attrLFN      = 0x0F
	attrDir      = 0x10
	attrVolumeID = 0x08
)

// ErrNoFAT marks a partition whose first sector is not a FAT32 boot sector.
var ErrNoFAT = errors.New("no FAT32 boot sector")

// Read reads the FAT32 file system of the partition at start (size bytes)
// of r.
func Read(r io.ReaderAt, start, size int64) (*Volume, error) {
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, start); err != nil {
		return nil, fmt.Errorf("read boot sector: %w", err)
	}
	v := &Volume{
		rw:                r,
		start:             start,
		bytesPerSector:    int64(binary.LittleEndian.Uint16(bs[11:])),
		sectorsPerCluster: int64(bs[13]),
		reservedSectors:   int64(binary.LittleEndian.Uint16(bs[14:])),
		numFATs:           int64(bs[16]),
		totalSectors:      int64(binary.LittleEndian.Uint32(bs[32:])),
		fatSectors:        int64(binary.LittleEndian.Uint32(bs[36:])),
		rootCluster:       binary.LittleEndian.Uint32(bs[44:]),
		fsInfoSector:      int64(binary.LittleEndian.Uint16(bs[48:])),
		backupBootSector:  int64(binary.LittleEndian.Uint16(bs[50:])),
		label:             strings.TrimRight(string(bs[71:82]), " \x00"),
	}
	switch {
	case bs[510] != 0x55 || bs[511] != 0xAA:
		return nil, fmt.Errorf("%w (no 55 AA signature; the partition may be zeroed or damaged)", ErrNoFAT)
	case binary.LittleEndian.Uint16(bs[22:]) != 0:
		// A 16-bit FAT size, which FAT32 keeps zero: FAT12 or FAT16,
		// whatever the partition type claims. Its type string is at
		// offset 54.
		kind := strings.TrimSpace(string(bs[54:62]))
		if kind != "FAT12" && kind != "FAT16" {
			kind = "FAT12/FAT16"
		}
		return nil, fmt.Errorf("%w: it holds a %s file system, though the partition type says FAT32; Raspberry Pi OS boot partitions are FAT32, so this is not an unmodified Raspberry Pi OS image", ErrNoFAT, kind)
	case v.bytesPerSector != 512 && v.bytesPerSector != 4096:
		return nil, fmt.Errorf("%w (bytes per sector is %d)", ErrNoFAT, v.bytesPerSector)
	case v.sectorsPerCluster == 0 || v.sectorsPerCluster&(v.sectorsPerCluster-1) != 0:
		return nil, fmt.Errorf("%w (sectors per cluster is %d)", ErrNoFAT, v.sectorsPerCluster)
	case v.fatSectors == 0 || v.numFATs == 0 || v.reservedSectors == 0:
		return nil, fmt.Errorf("%w (not FAT32: no 32-bit FAT size)", ErrNoFAT)
	case v.totalSectors*v.bytesPerSector > size:
		return nil, fmt.Errorf("%w (it claims %d bytes but the partition has %d)", ErrNoFAT, v.totalSectors*v.bytesPerSector, size)
	case v.dataStartSector() >= v.totalSectors:
		return nil, fmt.Errorf("%w (FATs larger than the partition)", ErrNoFAT)
	case v.fatSectors*v.bytesPerSector/4 < int64(v.clusterCount())+2:
		return nil, fmt.Errorf("%w (the FAT is too small for %d clusters)", ErrNoFAT, v.clusterCount())
	case v.fatSectors > (int64(v.clusterCount())+2)*4/v.bytesPerSector+128:
		// mkfs.fat sizes the FAT to the clusters; a far larger one is damage.
		return nil, fmt.Errorf("%w (a %d-sector FAT for %d clusters)", ErrNoFAT, v.fatSectors, v.clusterCount())
	case v.rootCluster < 2 || v.rootCluster >= v.clusterCount()+2:
		return nil, fmt.Errorf("%w (root directory cluster %d out of range)", ErrNoFAT, v.rootCluster)
	}
	return v, nil
}

func (v *Volume) dataStartSector() int64 { return v.reservedSectors + v.numFATs*v.fatSectors }

// MetadataEnd is the offset (in the file that holds the partition) just
// past the root directory's first cluster when that is the first cluster
// of the data area, as mkfs.fat makes it, else the data area's start:
// before it lie the boot sector, the FATs and (mostly) that cluster,
// which every edit rewrites.
func (v *Volume) MetadataEnd() int64 {
	if v.rootCluster == 2 {
		return v.clusterOffset(2) + v.ClusterBytes()
	}
	return v.clusterOffset(2)
}

// ClusterBytes is the cluster size.
func (v *Volume) ClusterBytes() int64 { return v.sectorsPerCluster * v.bytesPerSector }

// Label is the volume label of the boot sector.
func (v *Volume) Label() string { return v.label }

// Layout is where a FAT32 file system keeps what, in sectors from its
// start.
type Layout struct {
	SectorBytes, ReservedSectors, FSInfoSector, BackupBootSector, DataStartSector int64
}

// Layout describes the file system's layout.
func (v *Volume) Layout() Layout {
	return Layout{SectorBytes: v.bytesPerSector, ReservedSectors: v.reservedSectors, FSInfoSector: v.fsInfoSector,
		BackupBootSector: v.backupBootSector, DataStartSector: v.dataStartSector()}
}

// FreeBytes is the free space.
func (v *Volume) FreeBytes() (int64, error) {
	t, err := v.table()
	if err != nil {
		return 0, err
	}
	free, _ := freeClusters(t)
	return int64(free) * v.ClusterBytes(), nil
}
func (v *Volume) clusterCount() uint32 {
	return uint32((v.totalSectors - v.dataStartSector()) / v.sectorsPerCluster)
}
func (v *Volume) clusterOffset(c uint32) int64 {
	return v.start + (v.dataStartSector()+int64(c-2)*v.sectorsPerCluster)*v.bytesPerSector
}

// table reads the first FAT.
func (v *Volume) table() ([]uint32, error) {
	n := int64(v.clusterCount()) + 2
	if max := v.fatSectors * v.bytesPerSector / 4; n > max {
		n = max
	}
	b := make([]byte, n*4)
	if _, err := v.rw.ReadAt(b, v.start+v.reservedSectors*v.bytesPerSector); err != nil {
		return nil, fmt.Errorf("read FAT: %w", err)
	}
	t := make([]uint32, n)
	for i := range t {
		t[i] = binary.LittleEndian.Uint32(b[i*4:]) & fatEntryMask
	}
	return t, nil
}

// freeClusters counts unused clusters and finds the first one.
func freeClusters(t []uint32) (count uint32, first uint32) {
	first = 0xFFFFFFFF
	for c := uint32(2); c < uint32(len(t)); c++ {
		if t[c] == 0 {
			if count == 0 {
				first = c
			}
			count++
		}
	}
	return count, first
}

// chain follows a cluster chain, refusing loops and out-of-range links.
func chain(t []uint32, first uint32) ([]uint32, error) {
	var out []uint32
	for c := first; c >= 2 && c < fatEOC; c = t[c] {
		if c >= uint32(len(t)) || len(out) > len(t) {
			return nil, fmt.Errorf("broken cluster chain at %d", c)
		}
		out = append(out, c)
	}
	return out, nil
}

// dirEntry is one short-name directory entry.
type dirEntry struct {
	name    string // 11-byte short name, space padded ("CMDLINE TXT")
	attr    byte
	cluster uint32
	size    uint32
	offset  int64 // absolute byte offset of the entry
}

func (v *Volume) readDir(t []uint32, first uint32) ([]dirEntry, error) {
	clusters, err := chain(t, first)
	if err != nil {
		return nil, err
	}
	var out []dirEntry
	buf := make([]byte, v.ClusterBytes())
	for _, c := range clusters {
		if _, err := v.rw.ReadAt(buf, v.clusterOffset(c)); err != nil {
			return nil, fmt.Errorf("read directory cluster %d: %w", c, err)
		}
		for i := 0; i < len(buf); i += dirEntrySize {
			e := buf[i : i+dirEntrySize]
			switch {
			case e[0] == 0:
				return out, nil
			case e[0] == 0xE5, e[11] == attrLFN, e[11]&attrVolumeID != 0:
				continue
			}
			out = append(out, dirEntry{
				name:    string(e[0:11]),
				attr:    e[11],
				cluster: uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:])),
				size:    binary.LittleEndian.Uint32(e[28:]),
				offset:  v.clusterOffset(c) + int64(i),
			})
		}
	}
	return out, nil
}

// Normalize repairs what go-diskfs leaves behind after writing:
//   - ".." in a sub-directory of the root must point at cluster 0, not at
//     the root's cluster (fsck.fat: "Invalid '..' entry");
//   - the FSInfo free-cluster count and next-free hint must match the FAT
//     (fsck.fat: "Free cluster summary wrong");
//   - clusters of removed or replaced files must be freed (fsck.fat:
//     "Reclaimed N unused clusters");
//   - an empty file must own no cluster (go-diskfs gives it one; fsck.fat:
//     "File size is 0 bytes, cluster chain length is > 0 bytes");
//   - every FAT copy must equal the first.
func (v *Volume) Normalize(w io.WriterAt) error {
	t, err := v.table()
	if err != nil {
		return err
	}
	reachable := make([]bool, len(t))
	rootChain, err := chain(t, v.rootCluster)
	if err != nil {
		return fmt.Errorf("root directory: %w", err)
	}
	for _, c := range rootChain {
		reachable[c] = true
	}
	if err := v.repairTree(w, t, reachable, v.rootCluster, 0, 0); err != nil {
		return err
	}
	// go-diskfs does not free a removed or replaced file's clusters; free
	// every allocated cluster that no file or directory reaches.
	for c := uint32(2); c < uint32(len(t)); c++ {
		if t[c] != 0 && t[c] != fatBad && !reachable[c] {
			if err := v.freeCluster(w, t, c); err != nil {
				return err
			}
		}
	}
	// Every FAT copy equals the first.
	fatBytes := v.fatSectors * v.bytesPerSector
	primary := make([]byte, fatBytes)
	if _, err := v.rw.ReadAt(primary, v.start+v.reservedSectors*v.bytesPerSector); err != nil {
		return fmt.Errorf("read FAT: %w", err)
	}
	for i := int64(1); i < v.numFATs; i++ {
		if _, err := w.WriteAt(primary, v.start+(v.reservedSectors+i*v.fatSectors)*v.bytesPerSector); err != nil {
			return fmt.Errorf("write FAT copy %d: %w", i+1, err)
		}
	}

	free, next := freeClusters(t)
	info := make([]byte, 8)
	binary.LittleEndian.PutUint32(info[0:], free)
	binary.LittleEndian.PutUint32(info[4:], next)
	for _, sector := range []int64{v.fsInfoSector, v.backupBootSector + v.fsInfoSector} {
		if sector == 0 || sector >= v.reservedSectors || (sector != v.fsInfoSector && v.backupBootSector == 0) {
			continue
		}
		off := v.start + sector*v.bytesPerSector
		sig := make([]byte, 4)
		if _, err := v.rw.ReadAt(sig, off); err != nil || binary.LittleEndian.Uint32(sig) != 0x41615252 {
			continue // no FSInfo there
		}
		if _, err := w.WriteAt(info, off+488); err != nil {
			return fmt.Errorf("write FSInfo: %w", err)
		}
	}
	return nil
}

// repairTree walks a directory (depth-first) fixing ".." entries and
// empty files that own clusters, and marks every cluster a file or
// directory uses as reachable. t is updated in place.
func (v *Volume) repairTree(w io.WriterAt, t []uint32, reachable []bool, dir uint32, parent uint32, depth int) error {
	if depth > 32 {
		return errors.New("directory tree deeper than 32 levels (a loop?)")
	}
	entries, err := v.readDir(t, dir)
	if err != nil {
		return fmt.Errorf("read directory at cluster %d: %w", dir, err)
	}
	for _, e := range entries {
		switch {
		case e.name == "..         ":
			// The root's cluster is written as 0 in "..".
			want := parent
			if parent == v.rootCluster {
				want = 0
			}
			if e.cluster != want {
				if err := v.setEntryCluster(w, e.offset, want); err != nil {
					return err
				}
			}
		case e.name == ".          ":
		case e.attr&attrDir != 0:
			if e.cluster < 2 || e.cluster >= uint32(len(t)) {
				return fmt.Errorf("directory %q points at cluster %d", strings.TrimSpace(e.name), e.cluster)
			}
			clusters, err := chain(t, e.cluster)
			if err != nil {
				return fmt.Errorf("directory %q: %w", strings.TrimSpace(e.name), err)
			}
			for _, c := range clusters {
				reachable[c] = true
			}
			if err := v.repairTree(w, t, reachable, e.cluster, dir, depth+1); err != nil {
				return err
			}
		case e.size == 0 && e.cluster != 0:
			if err := v.freeEmptyFile(w, t, e); err != nil {
				return err
			}
		case e.cluster >= 2:
			clusters, err := chain(t, e.cluster)
			if err != nil {
				return fmt.Errorf("file %q: %w", strings.TrimSpace(e.name), err)
			}
			for _, c := range clusters {
				reachable[c] = true
			}
		}
	}
	return nil
}

// freeEmptyFile frees the clusters an empty file owns (go-diskfs leaves
// them) and points its entry at none, as fsck.fat wants.
func (v *Volume) freeEmptyFile(w io.WriterAt, t []uint32, e dirEntry) error {
	clusters, err := chain(t, e.cluster)
	if err != nil {
		return err
	}
	for _, c := range clusters {
		if err := v.freeCluster(w, t, c); err != nil {
			return err
		}
	}
	return v.setEntryCluster(w, e.offset, 0)
}

func (v *Volume) setEntryCluster(w io.WriterAt, offset int64, c uint32) error {
	b := make([]byte, 2)
	binary.LittleEndian.PutUint16(b, uint16(c>>16))
	if _, err := w.WriteAt(b, offset+20); err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(b, uint16(c))
	_, err := w.WriteAt(b, offset+26)
	return err
}

// freeCluster marks cluster c unused in the first FAT (and in t).
func (v *Volume) freeCluster(w io.WriterAt, t []uint32, c uint32) error {
	t[c] = 0
	_, err := w.WriteAt(make([]byte, 4), v.start+v.reservedSectors*v.bytesPerSector+int64(c)*4)
	return err
}

// Entries are raw directory entries by their byte offset.
type Entries = map[int64][dirEntrySize]byte

// Entries reads the raw 32 bytes of every short-name directory entry in
// the tree, "." and ".." included, by offset.
func (v *Volume) Entries() (Entries, error) {
	t, err := v.table()
	if err != nil {
		return nil, err
	}
	out := Entries{}
	var walk func(dir uint32, depth int) error
	walk = func(dir uint32, depth int) error {
		if depth > 32 {
			return errors.New("directory tree deeper than 32 levels (a loop?)")
		}
		entries, err := v.readDir(t, dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			var raw [dirEntrySize]byte
			if _, err := v.rw.ReadAt(raw[:], e.offset); err != nil {
				return fmt.Errorf("read directory entry: %w", err)
			}
			out[e.offset] = raw
			if e.attr&attrDir != 0 && e.name != ".          " && e.name != "..         " && e.cluster >= 2 {
				if err := walk(e.cluster, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return out, walk(v.rootCluster, 0)
}

// Restamp sets the creation, access and modification times of every
// directory entry that is new or changed since before to t.
func (v *Volume) Restamp(w io.WriterAt, before Entries, t time.Time) error {
	after, err := v.Entries()
	if err != nil {
		return err
	}
	date, clock, tenths := dosTime(t)
	for off, raw := range after {
		if old, ok := before[off]; ok && old == raw {
			continue
		}
		raw[13] = tenths
		binary.LittleEndian.PutUint16(raw[14:], clock)
		binary.LittleEndian.PutUint16(raw[16:], date)
		binary.LittleEndian.PutUint16(raw[18:], date)
		binary.LittleEndian.PutUint16(raw[22:], clock)
		binary.LittleEndian.PutUint16(raw[24:], date)
		if _, err := w.WriteAt(raw[:], off); err != nil {
			return fmt.Errorf("write directory entry: %w", err)
		}
	}
	return nil
}

// dosTime encodes t (UTC) as a FAT date, time and creation hundredths.
// FAT dates start in 1980.
func dosTime(t time.Time) (date, clock uint16, tenths byte) {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	clock = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	return date, clock, byte(t.Second()%2) * 100
}
