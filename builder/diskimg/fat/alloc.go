package fat

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// Where a node's new clusters go decides how much of a compressed image
// changes: `pibake build --compress` copies every xz block of the base
// that the edit leaves alone and compresses the rest again. An edit always
// rewrites the FAT and the root directory (new entries land in its last
// cluster); go-diskfs, left to itself, fills the first free clusters,
// which on a Raspberry Pi OS image are the gaps pi-gen left mid-partition
// (old initramfs, old cmdline.txt), another block again. So before go-diskfs
// writes, steer hides (marks bad in the FAT) the free clusters before
// the root directory's last cluster, when enough free space follows it:
// new files, replacements and directories then lie together right after
// the directory cluster the edit changes anyway. Afterwards the hidden
// clusters are free again, byte for byte as they were.

// Steer hides the free clusters before the root directory's last cluster
// from the allocator if at least need bytes are free after it. It returns
// what undoes it (always callable).
func (v *Volume) Steer(w io.WriterAt, need int64) (func() error, error) {
	none := func() error { return nil }
	t, err := v.table()
	if err != nil {
		return none, err
	}
	root, err := chain(t, v.rootCluster)
	if err != nil {
		return none, fmt.Errorf("root directory: %w", err)
	}
	anchor := root[len(root)-1]
	var after int64
	for c := anchor + 1; c < uint32(len(t)); c++ {
		if t[c] == 0 {
			after++
		}
	}
	if after*v.ClusterBytes() < need {
		return none, nil // first free first, as go-diskfs does
	}
	var hidden []uint32
	for c := uint32(2); c < anchor; c++ {
		if t[c] == 0 {
			hidden = append(hidden, c)
		}
	}
	if err := v.setEntries(w, hidden, fatBad); err != nil {
		return none, err
	}
	return func() error { return v.setEntries(w, hidden, 0) }, nil
}

// setEntries sets the entries of clusters to value in every FAT copy
// (go-diskfs refuses copies that differ).
func (v *Volume) setEntries(w io.WriterAt, clusters []uint32, value uint32) error {
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, value)
	for i := int64(0); i < v.numFATs; i++ {
		fat := v.start + (v.reservedSectors+i*v.fatSectors)*v.bytesPerSector
		for _, c := range clusters {
			if _, err := w.WriteAt(b, fat+int64(c)*4); err != nil {
				return fmt.Errorf("write FAT: %w", err)
			}
		}
	}
	return nil
}

// Owners names what the file system holds in each of the ranges (byte
// offsets of the file r that holds it), in order, once each: "boot
// sector" (the reserved sectors, FSInfo among them), "FAT", a directory or
// file by its path in short (8.3) names, "free space". Offsets outside
// the file system are left out.
func (v *Volume) Owners(ranges [][2]int64) ([]string, error) {
	t, err := v.table()
	if err != nil {
		return nil, err
	}
	owner := map[uint32]string{}
	if err := v.mapTree(t, v.rootCluster, "/", owner, 0); err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]bool{}
	for _, r := range ranges {
		for off := max(r[0], v.start); off < min(r[1], v.start+v.totalSectors*v.bytesPerSector); {
			if name := v.owner(off, owner); !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
			off = (off/v.bytesPerSector + 1) * v.bytesPerSector
		}
	}
	return out, nil
}

// owner names what holds the byte at off.
func (v *Volume) owner(off int64, owner map[uint32]string) string {
	dataStart := v.start + v.dataStartSector()*v.bytesPerSector
	switch {
	case off < v.start+v.reservedSectors*v.bytesPerSector:
		return "boot sector"
	case off < dataStart:
		return "FAT"
	}
	if name, ok := owner[uint32((off-dataStart)/v.ClusterBytes())+2]; ok {
		return name
	}
	return "free space"
}

// mapTree records which file or directory (by path) owns each cluster.
func (v *Volume) mapTree(t []uint32, dir uint32, path string, owner map[uint32]string, depth int) error {
	if depth > 32 {
		return fmt.Errorf("directory tree deeper than 32 levels (a loop?)")
	}
	clusters, err := chain(t, dir)
	if err != nil {
		return err
	}
	for _, c := range clusters {
		owner[c] = "directory " + path
	}
	entries, err := v.readDir(t, dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := strings.TrimSpace(e.name[:8])
		if ext := strings.TrimSpace(e.name[8:]); ext != "" {
			name += "." + ext
		}
		if name == "." || name == ".." || e.cluster < 2 {
			continue
		}
		if e.attr&attrDir != 0 {
			if err := v.mapTree(t, e.cluster, path+name+"/", owner, depth+1); err != nil {
				return err
			}
			continue
		}
		cs, err := chain(t, e.cluster)
		if err != nil {
			return err
		}
		for _, c := range cs {
			owner[c] = "file " + path + name
		}
	}
	return nil
}
