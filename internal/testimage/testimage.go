// Package testimage builds disk images shaped like official Raspberry Pi
// OS Lite 64-bit releases, with the distribution's own tools (sfdisk,
// mkfs.vfat, mtools, mkfs.ext4), for tests and `make demo`. Nothing it makes
// is ever committed: images are generated where they are needed.
package testimage

import (
	"bytes"
	"embed"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/pibake/pibake/internal/sparse"
)

// Spec describes one release's layout, as pi-gen makes it
// (export-image/prerun.sh; stage1/00-boot-files for cmdline.txt).
type Spec struct {
	// Name is "bookworm" or "trixie".
	Name string
	// BootStart is the first sector of the FAT boot partition: 8192 on
	// older Bookworm images (4 MiB alignment), 16384 since 2025.
	BootStart int64
	// ClusterSectors is the FAT cluster size: 4 sectors on Bookworm, 1 on
	// 2026+ Trixie.
	ClusterSectors int
	// DiskID is the MBR disk identifier; PARTUUIDs are <id>-01 and -02.
	DiskID uint32
	// RootMiB is the size of the ext4 root partition.
	RootMiB int64
	// FillMiB puts that much incompressible file data into the root file
	// system, so that an image has as much data as a real one (benchmarks).
	FillMiB int64
	// RootDir, when set, is the root file system's content (a bootable
	// tree for the QEMU test) instead of the generated stand-in files.
	RootDir string
	// BootMiB, when set, is the boot partition's size instead of every
	// release's 512 MiB: a small image for tests that build many times
	// (at least 33 MiB with 1-sector clusters: FAT32 needs 65525).
	BootMiB int64
	// Distro fills the boot partition with firmware, kernels and overlays
	// and FillMiB of the root with binaries, cut from this machine's
	// distribution files, the boot partition's free space left where
	// pi-gen leaves it (distro.go): an image that compresses like a real
	// one, for benchmarks.
	Distro bool
	// RootFiles are added to (or replace) the generated stand-in files of
	// the root file system, by path ("var/lib/dpkg/status"). Ignored with
	// RootDir.
	RootFiles map[string]string
}

// Bookworm is a Bookworm-style image: init=…/firstboot on the command
// line, 2 KiB clusters, 4 MiB alignment, no cloud-init.
func Bookworm() Spec {
	return Spec{Name: "bookworm", BootStart: 8192, ClusterSectors: 4, DiskID: 0x5e3da9e3, RootMiB: 64}
}

// Trixie is a Trixie-style image: "resize" on the command line, 512-byte
// clusters, 8 MiB alignment, cloud-init with its seed templates, ext4 with
// metadata_csum_seed and orphan_file.
func Trixie() Spec {
	return Spec{Name: "trixie", BootStart: 16384, ClusterSectors: 1, DiskID: 0x7c1b04d2, RootMiB: 64}
}

// Sector size and boot partition size of every release.
const (
	SectorSize      = 512
	BootSectors     = 1048576 // 512 MiB
	mebibyteSectors = 1 << 20 / SectorSize
)

// bootSectors is the boot partition's size in sectors.
func (s Spec) bootSectors() int64 {
	if s.BootMiB > 0 {
		return s.BootMiB * mebibyteSectors
	}
	return BootSectors
}

// RootStart is the first sector of the root partition.
func (s Spec) RootStart() int64 { return s.BootStart + s.bootSectors() }

// Size is the image size in bytes.
func (s Spec) Size() int64 { return (s.RootStart() + s.RootMiB*mebibyteSectors) * SectorSize }

// PartUUID returns the PARTUUID of partition n.
func (s Spec) PartUUID(n int) string { return fmt.Sprintf("%08x-%02d", s.DiskID, n) }

// Cmdline is the release's shipped cmdline.txt.
func (s Spec) Cmdline() string {
	base := "console=serial0,115200 console=tty1 root=PARTUUID=" + s.PartUUID(2) + " rootfstype=ext4 fsck.repair=yes rootwait"
	if s.Name == "trixie" {
		return base + " resize\n"
	}
	return base + " quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n"
}

// stock holds files of the real releases, byte for byte (stock/README.md
// names their upstream sources).
//
//go:embed stock/*-config.txt
var stock embed.FS

// ConfigTxt is the release's shipped config.txt: pi-gen's
// stage1/00-boot-files/files/config.txt (Trixie's adds [pi5]
// dtoverlay=nospi10 to Bookworm's).
func (s Spec) ConfigTxt() string {
	b, err := stock.ReadFile("stock/" + s.Name + "-config.txt")
	if err != nil {
		panic(fmt.Sprintf("testimage: no stock config.txt for %q: %v", s.Name, err))
	}
	return string(b)
}

// Tools are the commands Build runs.
var Tools = []string{"sfdisk", "mkfs.vfat", "mcopy", "mkfs.ext4"}

// Build writes a release-shaped image to path.
func Build(path string, s Spec) error {
	for _, tool := range Tools {
		if _, err := lookPath(tool); err != nil {
			return fmt.Errorf("build test image: %s not found (apt-get install fdisk dosfstools mtools e2fsprogs, or run make deps)", tool)
		}
	}
	work, err := os.MkdirTemp("", "pibake-testimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	if err := partition(path, s); err != nil {
		return err
	}
	var p *pool
	if s.Distro {
		if p, err = newPool(distroBootBytes + s.FillMiB<<20); err != nil {
			return err
		}
		err = makeDistroBoot(path, s, filepath.Join(work, "boot"), p)
	} else {
		err = makeBoot(path, s, filepath.Join(work, "boot"))
	}
	if err != nil {
		return err
	}
	return makeRoot(path, s, filepath.Join(work, "root"), p)
}

// partition makes path a sparse file of the image's size with its MBR.
func partition(path string, s Spec) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(s.Size()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	layout := fmt.Sprintf("label: dos\nlabel-id: 0x%08x\nunit: sectors\n\nstart=%d, size=%d, type=c\nstart=%d, size=%d, type=83\n",
		s.DiskID, s.BootStart, s.bootSectors(), s.RootStart(), s.RootMiB*mebibyteSectors)
	return run(layout, "sfdisk", "--no-reread", "--no-tell-kernel", "-q", path)
}

// makeBoot makes the boot partition: FAT32 "bootfs", populated with
// mtools from the files laid out in bootDir.
func makeBoot(path string, s Spec, bootDir string) error {
	if err := run("", "mkfs.vfat", "--offset", fmt.Sprint(s.BootStart), "-F", "32", "-s", fmt.Sprint(s.ClusterSectors),
		"-n", "bootfs", "-i", fmt.Sprintf("%08X", s.DiskID^0xb007), path, fmt.Sprint(s.bootSectors()/2)); err != nil {
		return err
	}
	if err := writeTree(bootDir, bootFiles(s)); err != nil {
		return err
	}
	entries, err := os.ReadDir(bootDir)
	if err != nil {
		return err
	}
	args := []string{"-i", fmt.Sprintf("%s@@%d", path, s.BootStart*SectorSize), "-s", "-m", "-Q"}
	for _, e := range entries {
		args = append(args, filepath.Join(bootDir, e.Name()))
	}
	return run("", "mcopy", append(args, "::")...)
}

// makeRoot makes the root partition: ext4 "rootfs" without 64bit, as
// pi-gen makes it, from s.RootDir or generated files (and s.RootFiles) laid
// out in rootDir.
func makeRoot(path string, s Spec, rootDir string, p *pool) error {
	if s.RootDir != "" {
		rootDir = s.RootDir
	} else if err := writeTree(rootDir, rootFiles(s)); err != nil {
		return err
	} else if err := writeTree(rootDir, s.RootFiles); err != nil {
		return err
	}
	if p != nil {
		if err := distroRoot(rootDir, s.FillMiB, p); err != nil {
			return err
		}
	} else if err := fill(filepath.Join(rootDir, "usr", "share", "filler"), s.FillMiB); err != nil {
		return err
	}
	features := "^64bit,^huge_file,metadata_csum,^metadata_csum_seed,^orphan_file"
	if s.Name == "trixie" {
		features = "^64bit,^huge_file,metadata_csum,metadata_csum_seed,orphan_file"
	}
	return run("", "mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "rootfs", "-O", features,
		"-E", fmt.Sprintf("offset=%d,root_owner=0:0", s.RootStart()*SectorSize), "-d", rootDir,
		path, fmt.Sprintf("%dM", s.RootMiB))
}

// BootFiles are the generated boot partition's files, by path.
func (s Spec) BootFiles() map[string]string { return bootFiles(s) }

// RootTree is the generated root file system's files, by path, with
// s.RootFiles.
func (s Spec) RootTree() map[string]string {
	files := rootFiles(s)
	for name, content := range s.RootFiles {
		files[name] = content
	}
	return files
}

// BootSectors is the boot partition's size in sectors.
func (s Spec) BootSectors() int64 { return s.bootSectors() }

func bootFiles(s Spec) map[string]string {
	files := map[string]string{
		"cmdline.txt":               s.Cmdline(),
		"config.txt":                s.ConfigTxt(),
		"kernel8.img":               strings.Repeat("kernel image stand-in\n", 4096),
		"initramfs8":                strings.Repeat("initramfs stand-in\n", 2048),
		"bcm2711-rpi-4-b.dtb":       strings.Repeat("\xd0\x0d\xfe\xed dtb\n", 512),
		"bcm2712-rpi-5-b.dtb":       strings.Repeat("\xd0\x0d\xfe\xed dtb\n", 512),
		"start4.elf":                strings.Repeat("firmware\n", 8192),
		"fixup4.dat":                strings.Repeat("fixup\n", 1024),
		"issue.txt":                 "Raspberry Pi reference " + s.Name + "\nGenerated using pi-gen, https://github.com/RPi-Distro/pi-gen\n",
		"LICENCE.broadcom":          "Copyright (c) 2006, Broadcom Corporation.\n",
		"overlays/README":           "Overlays are in this folder.\n",
		"overlays/vc4-kms-v3d.dtbo": strings.Repeat("overlay\n", 256),
		"overlays/overlay_map.dtb":  strings.Repeat("map\n", 64),
	}
	if s.Name == "trixie" {
		files["user-data"] = "#cloud-config\n# This is the user-data configuration file for cloud-init.\n#hostname: raspberrypi\n"
		files["meta-data"] = "dsmode: local\ninstance_id: rpios-image\n"
		files["network-config"] = "# This file contains a netplan-compatible configuration which cloud-init\n#network:\n#  version: 2\n"
	}
	return files
}

// dpkgStatus is a stand-in dpkg database (its format as dpkg writes it,
// lib/dpkg/dump.c): a few packages of Raspberry Pi OS Lite's some 600,
// with a Source field with and without a version, an arch-all package, and
// one removed whose conffiles remain (not installed). %s is the codename.
const dpkgStatus = `Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 344
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: arm64
Multi-Arch: foreign
Version: 12.4+deb12u11
Description: Debian base system miscellaneous files (%[1]s)

Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12840
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: arm64
Multi-Arch: same
Source: glibc
Version: 2.36-9+rpt2+deb12u12
Description: GNU C Library: Shared libraries

Package: libssl3
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 5460
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: arm64
Multi-Arch: same
Source: openssl (3.0.17-1~deb12u2)
Version: 3.0.17-1~deb12u2+b1
Description: Secure Sockets Layer toolkit - shared libraries

Package: raspberrypi-sys-mods
Status: install ok installed
Priority: optional
Section: admin
Installed-Size: 141
Maintainer: Serge Schneider <serge@raspberrypi.com>
Architecture: all
Version: 20250605
Description: System tweaks for the Raspberry Pi

Package: triggerhappy
Status: deinstall ok config-files
Priority: optional
Section: admin
Installed-Size: 100
Maintainer: Debian QA Group <packages@qa.debian.org>
Architecture: arm64
Version: 0.5.0-1.1+b2
Conffiles:
 /etc/triggerhappy/triggers.d/audio.conf 0123456789abcdef0123456789abcdef
Description: global hotkey daemon for Linux
`

func rootFiles(s Spec) map[string]string {
	codename, version := "bookworm", "12"
	machineID := ""
	if s.Name == "trixie" {
		codename, version = "trixie", "13"
		machineID = "uninitialized\n"
	}
	files := map[string]string{
		"etc/hostname":                           "raspberrypi\n",
		"etc/hosts":                              "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n\n127.0.1.1\t\traspberrypi\n",
		"etc/os-release":                         fmt.Sprintf("PRETTY_NAME=\"Debian GNU/Linux %s (%s)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"%s\"\nVERSION=\"%s (%s)\"\nVERSION_CODENAME=%s\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n", version, codename, version, version, codename, codename),
		"etc/fstab":                              fmt.Sprintf("proc            /proc           proc    defaults          0       0\nPARTUUID=%s  /boot/firmware  vfat    defaults          0       2\nPARTUUID=%s  /               ext4    defaults,noatime  0       1\n", s.PartUUID(1), s.PartUUID(2)),
		"etc/machine-id":                         machineID,
		"boot/firmware/.keep":                    "",
		"usr/lib/raspberrypi-sys-mods/firstboot": "#!/bin/sh\n# stand-in\n",
		"var/lib/dpkg/status":                    fmt.Sprintf(dpkgStatus, codename),
	}
	if s.Name == "trixie" {
		files["usr/bin/cloud-init"] = "#!/usr/bin/python3\n# stand-in\n"
		files["etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg"] = "datasource_list: [ NoCloud, None ]\ndatasource:\n  NoCloud:\n    seedfrom: file:///boot/firmware\n"
	}
	return files
}

func writeTree(dir string, files map[string]string) error {
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			return err
		}
	}
	return nil
}

// lookPath finds a tool on PATH or in the sbin directories that a normal
// user's PATH lacks.
func lookPath(tool string) (string, error) {
	if p, err := exec.LookPath(tool); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, tool)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", tool, exec.ErrNotFound)
}

func run(stdin, tool string, args ...string) error {
	path, err := lookPath(tool)
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "LC_ALL=C")
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", tool, strings.Join(args, " "), err, out.String())
	}
	return nil
}

// CopySparse copies an image, keeping holes, so that a copy of a mostly
// empty 600 MiB image takes a few MiB of disk and a few milliseconds.
func CopySparse(dst, src string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	return sparse.CopyFile(dst, src, 0, fi.Size())
}

// CopyRangeSparse copies size bytes from offset off of src into a new file
// dst (a partition into a file of its own), keeping holes.
func CopyRangeSparse(dst, src string, off, size int64) error {
	return sparse.CopyFile(dst, src, off, size)
}

// fill writes mib MiB of pseudo-random data in 16 MiB files.
func fill(dir string, mib int64) error {
	if mib <= 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rng := rand.New(rand.NewSource(mib))
	buf := make([]byte, 1<<20)
	for i := int64(0); i*16 < mib; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("blob-%03d", i)))
		if err != nil {
			return err
		}
		for j := int64(0); j < 16 && i*16+j < mib; j++ {
			rng.Read(buf)
			if _, err := f.Write(buf); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}
