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
// rewrites the boot sector, the FAT and the root directory's first
// cluster, which lie together at the partition's start, in the image's
// first xz block. Everything else it writes is new entries in the root
// directory's last cluster and new clusters, which go-diskfs, left to
// itself, puts in the first free clusters: on a Raspberry Pi OS image the
// gaps pi-gen left mid-partition (old initramfs, old cmdline.txt, not
// zeroed), where the root directory's later clusters are too, among
// firmware files. Compressing such a block again cost 1.3 s with xz -0 on
// the project's Pi OS-shaped image, against 0.05 s for a block of zeros
// that holds the same new files.
//
// So before go-diskfs writes, Steer picks where new clusters go: at the
// first 24 MiB boundary of the image (an xz block's start, as pi-gen's
// `xz -T0 -6` and pibake cut them) past the last cluster in use, where
// the base has only zeros, else right after that cluster. It moves the
// root directory's clusters after its first there (their bytes copied, the
// chain relinked, the old clusters left free, their bytes unchanged), and
// hides (marks bad in the FAT) every free cluster before that place from
// the allocator. Afterwards the hidden clusters are free again, byte for
// byte as they were. When the space past the last cluster in use is too
// small, new clusters go right after the root directory's last cluster,
// the free ones before it hidden; when that is too small as well, go-diskfs
// fills the first free clusters. The placement depends only on the base
// and the edit, so images stay byte-reproducible.

// steerAlign is the xz block size new clusters are aligned to.
const steerAlign = 24 << 20

// Steer places the edit's new clusters (need bytes, at most) as above. It
// returns what undoes the hiding (always callable); the moved directory
// clusters stay where they went.
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
	tail := root[1:]
	next, ok := v.placeAfterUse(t, need+int64(len(tail))*v.ClusterBytes())
	switch {
	case ok:
		if next, err = v.moveClusters(w, t, root, next); err != nil {
			return none, err
		}
	case v.freeFrom(t, root[len(root)-1]+1)*v.ClusterBytes() >= need:
		next = root[len(root)-1] + 1
	default:
		return none, nil // first free first, as go-diskfs does
	}
	var hidden []uint32
	for c := uint32(2); c < next; c++ {
		if t[c] == 0 {
			hidden = append(hidden, c)
		}
	}
	if err := v.setEntries(w, hidden, fatBad); err != nil {
		return none, err
	}
	return func() error { return v.setEntries(w, hidden, 0) }, nil
}

// placeAfterUse is the first cluster for n new bytes past the last cluster
// in use: aligned to steerAlign when room is left, else right after it.
func (v *Volume) placeAfterUse(t []uint32, n int64) (uint32, bool) {
	last := uint32(1)
	for c := uint32(2); c < uint32(len(t)); c++ {
		if t[c] != 0 {
			last = c
		}
	}
	first := last + 1
	off := v.clusterOffset(first)
	skip := (steerAlign - off%steerAlign) % steerAlign
	aligned := first + uint32((skip+v.ClusterBytes()-1)/v.ClusterBytes())
	for _, c := range []uint32{aligned, first} {
		if c < uint32(len(t)) && int64(uint32(len(t))-c)*v.ClusterBytes() >= n {
			return c, true
		}
	}
	return 0, false
}

// freeFrom counts the free clusters from c on.
func (v *Volume) freeFrom(t []uint32, c uint32) int64 {
	var n int64
	for ; c < uint32(len(t)); c++ {
		if t[c] == 0 {
			n++
		}
	}
	return n
}

// moveClusters moves the directory's clusters after its first to next,
// next+1, …: each copied, the chain relinked in every FAT copy (and in t),
// the old cluster freed. It returns the cluster after the last one moved.
func (v *Volume) moveClusters(w io.WriterAt, t []uint32, dir []uint32, next uint32) (uint32, error) {
	buf := make([]byte, v.ClusterBytes())
	for i := 1; i < len(dir); i++ {
		old, prev := dir[i], dir[i-1]
		if _, err := v.rw.ReadAt(buf, v.clusterOffset(old)); err != nil {
			return 0, fmt.Errorf("read directory cluster %d: %w", old, err)
		}
		if _, err := w.WriteAt(buf, v.clusterOffset(next)); err != nil {
			return 0, fmt.Errorf("write directory cluster %d: %w", next, err)
		}
		t[next], t[prev], t[old] = t[old], next, 0
		for _, c := range []uint32{next, prev, old} {
			if err := v.setEntries(w, []uint32{c}, t[c]); err != nil {
				return 0, err
			}
		}
		dir[i] = next
		next++
	}
	return next, nil
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
