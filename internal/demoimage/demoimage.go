// Package demoimage writes `make demo`'s base image in pure Go, with no
// tool but Go: a Raspberry Pi OS-shaped disk (MBR, FAT32 "bootfs" with
// the release's boot files, ext4 "rootfs" with the files pibake reads) of
// testimage's layout, the same bytes on every run. The tests' images
// come from the distribution's own tools (internal/testimage); this one
// is for a user's first try, offline, without them.
package demoimage

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/testimage"
)

// Time stamps every file of the image: the day Raspberry Pi OS Bookworm
// 2025-11-24 was released, so that nothing depends on the clock.
var Time = time.Date(2025, 11, 24, 0, 0, 0, 0, time.UTC)

// Build writes the image of s to path (replacing it), as a sparse file.
func Build(path string, s testimage.Spec) error {
	if s.RootDir != "" || s.FillMiB > 0 {
		return fmt.Errorf("demo image: RootDir and FillMiB need the distribution's tools (internal/testimage)")
	}
	if err := writeDisk(path, s); err != nil {
		return fmt.Errorf("demo image %s: %w", path, err)
	}
	// The boot files through pibake's own FAT writer: go-diskfs's writes,
	// repaired and stamped with one time.
	im, err := diskimg.Open(path, true)
	if err != nil {
		return fmt.Errorf("demo image %s: %w", path, err)
	}
	var files []diskimg.File
	for name, content := range s.BootFiles() {
		files = append(files, diskimg.File{Path: name, Data: []byte(content)})
	}
	if err := im.Apply(diskimg.Edit{Files: files, Time: Time}); err != nil {
		im.Close()
		return fmt.Errorf("demo image %s: boot files: %w", path, err)
	}
	return im.Close()
}

// writeDisk writes the MBR, the root file system and an empty FAT32.
func writeDisk(path string, s testimage.Spec) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(s.Size()); err != nil {
		return err
	}
	if _, err := f.WriteAt(mbr(s), 0); err != nil {
		return fmt.Errorf("write MBR: %w", err)
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("pibake demo %s %08x", s.Name, s.DiskID)))
	l := Layout{Blocks: uint32(s.RootMiB << 20 / blockSize), Inodes: 1024, Label: "rootfs", Time: uint32(Time.Unix())}
	copy(l.UUID[:], sum[:16])
	copy(l.HashSeed[:], sum[16:])
	l.UUID[6], l.UUID[8] = l.UUID[6]&0x0f|0x40, l.UUID[8]&0x3f|0x80 // a version 4 UUID's bits
	root, err := makeExt4(l, s.RootTree())
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(root, s.RootStart()*testimage.SectorSize); err != nil {
		return fmt.Errorf("write root file system: %w", err)
	}
	// reproducible: a volume id of 0 rather than the clock's.
	if _, err := fat32.Create(file.New(f, false), s.BootSectors()*testimage.SectorSize, s.BootStart*testimage.SectorSize, testimage.SectorSize, "bootfs", true); err != nil {
		return fmt.Errorf("make FAT32 boot file system: %w", err)
	}
	if err := stampLabel(f, s.BootStart*testimage.SectorSize); err != nil {
		return err
	}
	return f.Sync()
}

// stampLabel gives the FAT volume label's directory entry, which
// go-diskfs stamps with the clock even when reproducible, Time instead.
// The root directory's first cluster is found from the boot sector
// (Microsoft's FAT32 specification, "BPB"); the label is its entry with
// attribute 0x08 alone.
func stampLabel(f *os.File, off int64) error {
	bpb := make([]byte, 512)
	if _, err := f.ReadAt(bpb, off); err != nil {
		return fmt.Errorf("read FAT boot sector: %w", err)
	}
	le := binary.LittleEndian
	bps, spc := int64(le.Uint16(bpb[11:])), int64(bpb[13])
	dataStart := int64(le.Uint16(bpb[14:])) + int64(bpb[16])*int64(le.Uint32(bpb[36:]))
	root := off + (dataStart+(int64(le.Uint32(bpb[44:]))-2)*spc)*bps
	dir := make([]byte, spc*bps)
	if _, err := f.ReadAt(dir, root); err != nil {
		return fmt.Errorf("read FAT root directory: %w", err)
	}
	t := Time
	date := uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	clock := uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	for i := 0; i < len(dir); i += 32 {
		if e := dir[i : i+32]; e[11] == 0x08 {
			e[13] = 0
			le.PutUint16(e[14:], clock)
			le.PutUint16(e[16:], date)
			le.PutUint16(e[18:], date)
			le.PutUint16(e[22:], clock)
			le.PutUint16(e[24:], date)
			_, err := f.WriteAt(e, root+int64(i))
			return err
		}
	}
	return fmt.Errorf("the FAT root directory has no volume label entry")
}

// mbr is the disk's first sector: the disk identifier and two primary
// partitions, FAT32 LBA (0x0c) and Linux (0x83), addressed by LBA (CHS
// fields say "beyond CHS", as for any disk past 8 GiB).
func mbr(s testimage.Spec) []byte {
	b := make([]byte, testimage.SectorSize)
	le := binary.LittleEndian
	le.PutUint32(b[440:], s.DiskID)
	for i, p := range []struct {
		typ         byte
		start, size int64
	}{{0x0c, s.BootStart, s.BootSectors()}, {0x83, s.RootStart(), s.RootMiB << 20 / testimage.SectorSize}} {
		e := b[446+16*i:]
		copy(e[1:4], []byte{0xfe, 0xff, 0xff})
		e[4] = p.typ
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		le.PutUint32(e[8:], uint32(p.start))
		le.PutUint32(e[12:], uint32(p.size))
	}
	b[510], b[511] = 0x55, 0xaa
	return b
}
