package testimage

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// A Distro image (Spec.Distro) has what a real Raspberry Pi OS image has
// where it matters to compressing it: firmware, kernels, initramfs,
// device trees and overlays on the boot partition, binaries on the root,
// all cut from this machine's own distribution files (shared libraries,
// programs, documentation), which compress about as Raspberry Pi OS's do,
// neither like zeros nor like random data. And the boot partition's free
// space lies where pi-gen leaves it: stage1 writes cmdline.txt and
// config.txt first (stage1/00-boot-files), the firmware and kernel
// packages follow (stage1/stage2), update-initramfs rewrites the
// initramfs as packages arrive, and export-image rewrites cmdline.txt
// with the PARTUUID (sed -i: a new file) at the end; each rewrite leaves
// the old clusters free behind the files written since.

// distroSources are where the content comes from, walked in lexical
// order: the same machine gives the same image.
var distroSources = []string{"/usr/lib", "/usr/share", "/usr/bin"}

// pool reads the distribution's regular files one after another.
type pool struct {
	files []string
	next  int
	cur   *os.File
}

// newPool lists files until they hold at least need bytes.
func newPool(need int64) (*pool, error) {
	p := &pool{}
	var have int64
	stop := fs.SkipAll
	for _, root := range distroSources {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // unreadable: not content
			}
			if have >= need {
				return stop
			}
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil || fi.Size() == 0 {
				return nil
			}
			p.files = append(p.files, path)
			have += fi.Size()
			return nil
		})
		if err != nil && err != stop {
			return nil, err
		}
	}
	if have < need {
		return nil, fmt.Errorf("distribution files under %s hold %d MiB, the image needs %d MiB", strings.Join(distroSources, ", "), have>>20, need>>20)
	}
	return p, nil
}

// take reads the next n bytes of the distribution's files.
func (p *pool) take(n int64) ([]byte, error) {
	buf := make([]byte, n)
	for off := 0; off < len(buf); {
		if p.cur == nil {
			if p.next == len(p.files) {
				return nil, fmt.Errorf("distribution files exhausted")
			}
			f, err := os.Open(p.files[p.next])
			p.next++
			if err != nil {
				continue
			}
			p.cur = f
		}
		k, err := p.cur.Read(buf[off:])
		off += k
		if err != nil {
			p.cur.Close()
			p.cur = nil
			if err != io.EOF {
				continue
			}
		}
	}
	return buf, nil
}

// distroBoot are the boot partition's files by stage, each a size or a
// fixed content; sizes are Raspberry Pi OS Lite 64-bit's (Bookworm).
type bootFile struct {
	name    string
	size    int64
	content string
}

func distroFirmware() []bootFile {
	files := []bootFile{{name: "bootcode.bin", size: 52476}, {name: "LICENCE.broadcom", size: 1594}, {name: "COPYING.linux", size: 18693}}
	for name, size := range map[string]int64{"start.elf": 2978976, "start4.elf": 2252800, "start4cd.elf": 813916, "start4db.elf": 4794472,
		"start4x.elf": 2998400, "start_cd.elf": 813916, "start_db.elf": 4794472, "start_x.elf": 3934592} {
		files = append(files, bootFile{name: name, size: size}, bootFile{name: "fixup" + strings.TrimSuffix(strings.TrimPrefix(name, "start"), ".elf") + ".dat", size: 5400 + size%4000})
	}
	files = append(files, bootFile{name: "kernel8.img", size: 9465344}, bootFile{name: "kernel_2712.img", size: 9620992})
	for i := 0; i < 36; i++ {
		files = append(files, bootFile{name: fmt.Sprintf("bcm27%02d-rpi-%d.dtb", 10+i%3, i), size: 32000 + int64(i*977)})
	}
	for i := 0; i < 300; i++ {
		files = append(files, bootFile{name: fmt.Sprintf("overlays/ov%03d.dtbo", i), size: 900 + int64(i*37%5200)})
	}
	files = append(files, bootFile{name: "overlays/overlay_map.dtb", size: 5233}, bootFile{name: "overlays/README", size: 98352})
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files
}

// makeDistroBoot lays out the boot partition in pi-gen's stages with
// mtools (each mcopy run allocates after what is written, as the Linux
// driver does, so rewritten files leave free clusters behind).
func makeDistroBoot(path string, s Spec, work string, p *pool) error {
	if err := run("", "mkfs.vfat", "--offset", fmt.Sprint(s.BootStart), "-F", "32", "-s", fmt.Sprint(s.ClusterSectors),
		"-n", "bootfs", "-i", fmt.Sprintf("%08X", s.DiskID^0xb007), path, fmt.Sprint(s.bootSectors()/2)); err != nil {
		return err
	}
	img := fmt.Sprintf("%s@@%d", path, s.BootStart*SectorSize)
	stock := bootFiles(s)
	initramfs := func() []bootFile {
		return []bootFile{{name: "initramfs8", size: 12127498}, {name: "initramfs_2712", size: 12127498}}
	}
	stages := [][]bootFile{
		{{name: "cmdline.txt", content: strings.Replace(stock["cmdline.txt"], s.PartUUID(2), "ROOTDEV", 1)}, {name: "config.txt", content: stock["config.txt"]}},
		append(distroFirmware(), initramfs()...),
		initramfs(), // update-initramfs, as packages arrive
		initramfs(),
		{{name: "cmdline.txt", content: stock["cmdline.txt"]}, {name: "issue.txt", content: stock["issue.txt"]}},
	}
	for i, stage := range stages {
		dir := filepath.Join(work, fmt.Sprintf("stage%d", i))
		files := map[string]string{}
		var top []string
		for _, f := range stage {
			content := f.content
			if f.content == "" {
				b, err := p.take(f.size)
				if err != nil {
					return err
				}
				content = string(b)
			}
			files[f.name] = content
			if name, _, _ := strings.Cut(f.name, "/"); !contains(top, name) {
				top = append(top, name)
			}
			if i > 0 && !strings.Contains(f.name, "/") {
				run("", "mdel", "-i", img, "::"+f.name) // absent the first time
			}
		}
		if err := writeTree(dir, files); err != nil {
			return err
		}
		args := []string{"-i", img, "-s", "-m", "-Q"}
		for _, name := range top {
			args = append(args, filepath.Join(dir, name))
		}
		if err := run("", "mcopy", append(args, "::")...); err != nil {
			return err
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// distroRoot writes mib MiB of the distribution's bytes into the root
// file system's tree as libraries and programs of the sizes they have
// (4 KiB to about 2 MiB).
func distroRoot(rootDir string, mib int64, p *pool) error {
	for i, have := int64(0), int64(0); have < mib<<20; i++ {
		size := min(4096+(i*7919%512)*(i*31%8+1)*512, mib<<20-have)
		b, err := p.take(size)
		if err != nil {
			return err
		}
		dst := filepath.Join(rootDir, "usr", "lib", "aarch64-linux-gnu", fmt.Sprintf("d%02d", i%64), fmt.Sprintf("lib%05d.so", i))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
		have += size
	}
	return nil
}

// distroBootBytes is more than the boot partition's stages take from the
// pool (firmware, kernels and three rounds of initramfs: about 120 MiB).
const distroBootBytes = 160 << 20
