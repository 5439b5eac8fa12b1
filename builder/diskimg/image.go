// Package diskimg reads Raspberry Pi OS disk images and edits their FAT32
// boot partition, without root, loop devices or mounts. The ext4 root file
// system is only ever read: go-diskfs's ext4 writer corrupts Raspberry Pi
// OS's 32-bit-descriptor file systems (go-diskfs v1.9.4 panics in
// groupdescriptors.go and leaves the file system failing e2fsck).
//
// This package is internal to pibake and not a stable API.
package diskimg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/pibake/pibake/builder/diskimg/fat"
)

// SectorSize is the logical sector size of every Raspberry Pi OS image.
const SectorSize = 512

// MBR partition types pibake recognises.
const (
	TypeFAT32CHS byte = 0x0b
	TypeFAT32LBA byte = 0x0c
	TypeLinux    byte = 0x83
	typeGPT      byte = 0xee
)

// Partition is one MBR partition.
type Partition struct {
	Index       int    `json:"index"` // 1-based, as Linux and PARTUUIDs count
	Type        byte   `json:"type"`
	StartSector int64  `json:"start_sector"`
	Sectors     int64  `json:"sectors"`
	FileSystem  string `json:"filesystem"` // "vfat", "ext4" or ""
	Label       string `json:"label"`
}

// Offset is the partition's first byte in the image.
func (p Partition) Offset() int64 { return p.StartSector * SectorSize }

// Size is the partition's size in bytes.
func (p Partition) Size() int64 { return p.Sectors * SectorSize }

// Image is an open Raspberry Pi OS disk image.
type Image struct {
	path string
	// src is what the image is read from; f is the same file when it is
	// a plain file or device (nil for another Source), for writing.
	src      Source
	f        *os.File
	writable bool
	size     int64
	// DiskID is the MBR disk identifier (PARTUUID prefix).
	DiskID     uint32
	Partitions []Partition
	// Boot and Root index Partitions.
	Boot, Root int
	fat        *fat.Volume
}

// Open opens the image at path and finds its boot and root partitions.
// Every problem is an error naming the file and what is wrong.
func Open(path string, writable bool) (*Image, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("open image %s: is a directory", path)
	}
	// Checked by mode too: root may write a read-only file, but the user
	// marked it read-only for a reason.
	if writable && fi.Mode().Perm()&0o200 == 0 {
		return nil, fmt.Errorf("open image %s: the file is read-only (mode %#o); make it writable (chmod u+w) or work on a copy", path, fi.Mode().Perm())
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	size := fi.Size()
	if fi.Mode()&os.ModeDevice != 0 {
		// A card in a reader: a block device reports no size to Stat.
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("open image %s: size of the device: %w", path, err)
		}
	}
	im := &Image{path: path, src: f, f: f, writable: writable, size: size, Boot: -1, Root: -1}
	if err := im.readPartitions(); err != nil {
		f.Close()
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	return im, nil
}

// Source is what an image can be read from besides a file: the content
// of an .img.xz, say. go-diskfs reads through it as through a file.
type Source interface {
	io.ReaderAt
	io.Reader
	io.Seeker
	io.Closer
	Stat() (fs.FileInfo, error)
}

// OpenSource opens, read-only, an image held by src (which the Image
// closes), named path in messages.
func OpenSource(path string, src Source) (*Image, error) {
	size, err := src.Seek(0, io.SeekEnd)
	if err != nil {
		src.Close()
		return nil, fmt.Errorf("open image %s: %w", path, err)
	}
	im := &Image{path: path, src: src, size: size, Boot: -1, Root: -1}
	if err := im.readPartitions(); err != nil {
		src.Close()
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	return im, nil
}

// Close closes the image file, syncing it first when it was writable.
func (im *Image) Close() error {
	if im.writable {
		if err := im.f.Sync(); err != nil {
			im.f.Close()
			return fmt.Errorf("sync %s: %w", im.path, err)
		}
	}
	return im.src.Close()
}

// CloseUnsynced closes the image file without syncing it, for a caller
// that syncs it itself later, overlapping the sync with other work.
func (im *Image) CloseUnsynced() error {
	return im.src.Close()
}

func (im *Image) readPartitions() error {
	if im.size < SectorSize {
		return fmt.Errorf("the file is empty or too small to be a disk image (%d bytes)", im.size)
	}
	mbr := make([]byte, SectorSize)
	if _, err := im.src.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("read partition table: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return errors.New("no MBR partition table (the first sector lacks the 55 AA signature): not a disk image, or a compressed one (decompress .img.xz first)")
	}
	im.DiskID = binary.LittleEndian.Uint32(mbr[440:])
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i : 446+16*(i+1)]
		p := Partition{
			Index:       i + 1,
			Type:        e[4],
			StartSector: int64(binary.LittleEndian.Uint32(e[8:])),
			Sectors:     int64(binary.LittleEndian.Uint32(e[12:])),
		}
		if p.Type == 0 || p.Sectors == 0 {
			continue
		}
		if p.Type == typeGPT {
			return errors.New("GPT partition table: Raspberry Pi OS images use MBR, so this is not a Raspberry Pi OS image")
		}
		if end := p.Offset() + p.Size(); end > im.size {
			return fmt.Errorf("partition %d ends at byte %d, past the end of the file (%d bytes): the image is truncated; download or copy it again", p.Index, end, im.size)
		}
		im.Partitions = append(im.Partitions, p)
	}
	return im.findFileSystems()
}

// findFileSystems finds the boot (the first FAT32) and root (the first
// ext4) partitions and reads their labels.
func (im *Image) findFileSystems() error {
	for i := range im.Partitions {
		p := &im.Partitions[i]
		switch p.Type {
		case TypeFAT32LBA, TypeFAT32CHS:
			v, err := fat.Read(im.src, p.Offset(), p.Size())
			if err != nil {
				return fmt.Errorf("partition %d (FAT32, type %#02x): %w", p.Index, p.Type, err)
			}
			p.FileSystem, p.Label = "vfat", v.Label()
			if im.Boot < 0 {
				im.Boot, im.fat = i, v
			}
		case TypeLinux:
			label, ok := ext4Label(im.src, p.Offset())
			if ok {
				p.FileSystem, p.Label = "ext4", label
				if im.Root < 0 {
					im.Root = i
				}
			}
		}
	}
	switch {
	case im.Boot < 0:
		return fmt.Errorf("no FAT32 boot partition (MBR type 0x0c) among %d partitions: not a Raspberry Pi OS image", len(im.Partitions))
	case im.Root < 0:
		return fmt.Errorf("no ext4 root partition (MBR type 0x83) among %d partitions: not a Raspberry Pi OS image", len(im.Partitions))
	}
	return nil
}

// ext4Label reads the volume label from an ext4 superblock.
func ext4Label(f io.ReaderAt, offset int64) (string, bool) {
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, offset+1024); err != nil {
		return "", false
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 {
		return "", false
	}
	return strings.TrimRight(string(sb[0x78:0x88]), "\x00"), true
}

// BootPartition is the FAT32 boot partition.
func (im *Image) BootPartition() Partition { return im.Partitions[im.Boot] }

// RootPartition is the ext4 root partition.
func (im *Image) RootPartition() Partition { return im.Partitions[im.Root] }

// ClusterBytes is the boot partition's cluster size.
func (im *Image) ClusterBytes() int64 { return im.fat.ClusterBytes() }

// BootMetadataEnd is the image offset just past the boot partition's
// boot sector, FATs and root directory's first cluster: what every edit
// rewrites (fat.Volume.MetadataEnd).
func (im *Image) BootMetadataEnd() int64 { return im.fat.MetadataEnd() }

// FreeBootBytes is the free space on the boot partition.
func (im *Image) FreeBootBytes() (int64, error) {
	free, err := im.fat.FreeBytes()
	if err != nil {
		return 0, fmt.Errorf("boot partition: %w", err)
	}
	return free, nil
}

// bootFS opens the boot partition with go-diskfs.
func (im *Image) bootFS() (fs *fat32.FileSystem, err error) {
	p := im.BootPartition()
	err = guard("read FAT32 boot partition", func() error {
		var e error
		fs, e = fat32.Read(file.New(im.src, !im.writable), p.Size(), p.Offset(), SectorSize)
		return e
	})
	if err != nil {
		return nil, fmt.Errorf("boot partition (partition %d): %w", p.Index, err)
	}
	return fs, nil
}

// ReadBootFile reads a file from the boot partition ("cmdline.txt").
func (im *Image) ReadBootFile(name string) ([]byte, error) {
	bfs, err := im.bootFS()
	if err != nil {
		return nil, err
	}
	var b []byte
	err = guard("read "+name, func() error {
		// One Read of exactly the file's size: go-diskfs v1.9.4's File.Read
		// reads past the end of the file when a read starts inside a
		// cluster, so io.ReadAll's growing reads return trailing garbage.
		p := strings.TrimPrefix(name, "/")
		fi, e := bfs.Stat(p)
		if e != nil {
			return e
		}
		f, e := bfs.OpenFile(p, os.O_RDONLY)
		if e != nil {
			return e
		}
		defer f.Close()
		b = make([]byte, fi.Size())
		if len(b) == 0 {
			return nil
		}
		got, e := f.Read(b)
		if got == len(b) && errors.Is(e, io.EOF) {
			e = nil
		}
		if e == nil && got < len(b) {
			e = fmt.Errorf("read %d of its %d bytes: %w", got, len(b), io.ErrUnexpectedEOF)
		}
		return e
	})
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") || strings.Contains(err.Error(), "not found") {
			err = fmt.Errorf("%w (%v)", ErrNotExist, err)
		}
		return nil, fmt.Errorf("boot partition: read %s: %w", name, err)
	}
	return b, nil
}

// ReadRootFile reads a file from the ext4 root file system ("etc/hostname").
func (im *Image) ReadRootFile(name string) ([]byte, error) {
	p := im.RootPartition()
	var b []byte
	err := guard("read ext4 "+name, func() error {
		rfs, e := ext4.Read(file.New(im.src, true), p.Size(), p.Offset(), SectorSize)
		if e != nil {
			return e
		}
		// go-diskfs wants ext4 paths without a leading slash.
		b, e = rfs.ReadFile(strings.TrimPrefix(name, "/"))
		return e
	})
	if err != nil {
		return nil, fmt.Errorf("root partition (partition %d): read %s: %w", p.Index, name, err)
	}
	return b, nil
}

// RootFileExists reports whether a path exists on the root file system,
// looking it up directory by directory (go-diskfs reports a missing
// directory only as a failed read).
func (im *Image) RootFileExists(name string) (bool, error) {
	p := im.RootPartition()
	found := false
	err := guard("look up ext4 "+name, func() error {
		rfs, e := ext4.Read(file.New(im.src, true), p.Size(), p.Offset(), SectorSize)
		if e != nil {
			return e
		}
		dir := "."
		for _, part := range strings.Split(strings.Trim(name, "/"), "/") {
			entries, e := rfs.ReadDir(dir)
			if e != nil {
				return e
			}
			hit := false
			for _, en := range entries {
				if en.Name() == part {
					hit = true
					break
				}
			}
			if !hit {
				return nil
			}
			dir = strings.TrimPrefix(dir+"/"+part, "./")
		}
		found = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("root partition (partition %d): look up %s: %w", p.Index, name, err)
	}
	return found, nil
}

// guard turns a panic inside go-diskfs (it has some on malformed input)
// into an error, so a bad image never crashes pibake.
func guard(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: the file system is malformed (go-diskfs: %v)", what, r)
		}
	}()
	return f()
}

// partUUID returns partition n's PARTUUID as Linux and cmdline.txt spell
// it: the disk identifier and the partition number.
func (im *Image) partUUID(n int) string { return fmt.Sprintf("%08x-%02d", im.DiskID, n) }

// Owners names what the image holds in each of the ranges (byte
// offsets), in order, once each: "partition table" before the boot
// partition, "root partition" after it, and in it what fat.Owners names
// (the boot sector, the FAT, directories and files by their 8.3 paths,
// free space). It explains which writes changed a block of a compressed
// image.
func (im *Image) Owners(ranges [][2]int64) ([]string, error) {
	boot := im.BootPartition()
	var out []string
	if len(ranges) > 0 && ranges[0][0] < boot.Offset() {
		out = append(out, "partition table")
	}
	in, err := im.fat.Owners(ranges)
	if err != nil {
		return nil, fmt.Errorf("boot partition: %w", err)
	}
	out = append(out, in...)
	if n := len(ranges); n > 0 && ranges[n-1][1] > boot.Offset()+boot.Size() {
		out = append(out, "root partition")
	}
	return out, nil
}

// Size is the image file's size in bytes.
func (im *Image) Size() int64 { return im.size }

// ErrNotExist is returned (wrapped) for a file absent from the boot
// partition.
var ErrNotExist = fs.ErrNotExist
