package diskimg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/pibake/pibake/internal/configtxt"
)

// File is a file to write on the boot partition.
type File struct {
	// Path relative to the partition root, with forward slashes.
	Path string
	Data []byte
	// Source, when set, is a local file copied instead of Data.
	Source string
}

// Edit is one set of changes to the boot partition.
type Edit struct {
	Files []File
	// Remove lists paths to delete when present.
	Remove        []string
	CmdlineAdd    []string
	CmdlineRemove []string
	// ConfigTxt, when not nil, is what pibake's block in config.txt holds
	// (configtxt.Patch); nil leaves config.txt as it is, byte for byte.
	ConfigTxt []string
	// Time stamps every directory entry written, so the bytes do not
	// depend on the clock. Zero means NewestBootTime.
	Time time.Time
}

// patchCmdline returns cmdline.txt with args removed and then added where
// missing, as one line that keeps every other argument in order.
func patchCmdline(cmdline string, add, remove []string) string {
	drop := map[string]bool{}
	for _, a := range remove {
		drop[a] = true
	}
	var out []string
	have := map[string]bool{}
	for _, a := range strings.Fields(cmdline) {
		if drop[a] {
			continue
		}
		out = append(out, a)
		have[a] = true
	}
	for _, a := range add {
		if !have[a] {
			out = append(out, a)
			have[a] = true
		}
	}
	return strings.Join(out, " ") + "\n"
}

// checkCmdlineArgs refuses arguments the OS's own first boot keys on.
func checkCmdlineArgs(args []string) error {
	for _, a := range args {
		switch {
		case strings.Contains(a, "firstboot"):
			return fmt.Errorf("cmdline argument %q contains \"firstboot\", which Bookworm's initramfs greps for", a)
		case strings.HasPrefix(a, "resize"):
			return fmt.Errorf("cmdline argument %q starts with \"resize\", which Trixie's initramfs strips", a)
		case strings.ContainsAny(a, " \t\r\n"):
			return fmt.Errorf("cmdline argument %q contains white space", a)
		}
	}
	return nil
}

// NewestBootTime is the newest modification time on the boot partition:
// a timestamp that belongs to the base image, so edits stamped with it do
// not depend on when pibake ran.
func (im *Image) NewestBootTime() (time.Time, error) {
	bfs, err := im.bootFS()
	if err != nil {
		return time.Time{}, err
	}
	var newest time.Time
	var walk func(dir string) error
	walk = func(dir string) error {
		entries, err := bfs.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Name() == "." || e.Name() == ".." {
				continue
			}
			info, err := e.Info()
			if err != nil {
				return err
			}
			if info.ModTime().After(newest) {
				newest = info.ModTime()
			}
			if e.IsDir() {
				if err := walk(path.Join(dir, e.Name())); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := guard("list boot partition", func() error { return walk(".") }); err != nil {
		return time.Time{}, fmt.Errorf("boot partition: %w", err)
	}
	if newest.IsZero() {
		newest = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return newest.UTC(), nil
}

// Apply writes e to the boot partition: it checks that everything fits
// before writing anything, writes the files, patches cmdline.txt, then
// repairs what go-diskfs leaves behind so that fsck.fat stays silent and
// stamps what it wrote. The order of its steps is what makes an edit
// all-or-nothing.
func (im *Image) Apply(e Edit) error {
	if !im.writable {
		return fmt.Errorf("image %s: opened read-only", im.path)
	}
	files, stamp, err := im.plan(e)
	if err != nil {
		return err
	}
	part := im.BootPartition().Index
	before, err := im.fat.Entries()
	if err != nil {
		return fmt.Errorf("boot partition (partition %d): %w", part, err)
	}
	unsteer, err := im.fat.Steer(im.f, im.steerNeed(files))
	if err != nil {
		return fmt.Errorf("boot partition (partition %d): %w", part, err)
	}
	bfs, err := im.bootFS()
	if err == nil {
		if err = write(bfs, e.Remove, files); err != nil {
			err = fmt.Errorf("boot partition (partition %d): %w", part, err)
		}
	}
	if uerr := unsteer(); err == nil && uerr != nil {
		err = fmt.Errorf("boot partition (partition %d): %w", part, uerr)
	}
	if err != nil {
		return err
	}
	if err := im.fat.Normalize(im.f); err != nil {
		return fmt.Errorf("boot partition (partition %d): repair after write: %w", im.BootPartition().Index, err)
	}
	// go-diskfs stamps what it writes with the clock (or a process-wide
	// SOURCE_DATE_EPOCH); every entry this edit made or changed gets the
	// edit's one time instead, so the bytes never depend on the clock.
	if err := im.fat.Restamp(im.f, before, stamp); err != nil {
		return fmt.Errorf("boot partition (partition %d): timestamps: %w", im.BootPartition().Index, err)
	}
	return nil
}

// plan is every file an edit writes, sorted, cmdline.txt patched among
// them, and the time they are stamped with; it refuses an edit that would
// not fit, before anything is written.
func (im *Image) plan(e Edit) ([]File, time.Time, error) {
	if err := checkCmdlineArgs(e.CmdlineAdd); err != nil {
		return nil, time.Time{}, err
	}
	files := append([]File(nil), e.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	patched, err := im.patchedBootFiles(e)
	if err != nil {
		return nil, time.Time{}, err
	}
	files = append(files, patched...)
	sizes := make([]int64, len(files))
	for i, f := range files {
		sizes[i] = int64(len(f.Data))
		if f.Source != "" {
			fi, err := os.Stat(f.Source)
			if err != nil {
				return nil, time.Time{}, fmt.Errorf("payload file %s: %w", f.Path, err)
			}
			sizes[i] = fi.Size()
		}
	}
	if err := im.checkFits(files, sizes); err != nil {
		return nil, time.Time{}, err
	}
	if !e.Time.IsZero() {
		return files, e.Time, nil
	}
	stamp, err := im.NewestBootTime()
	return files, stamp, err
}

// write removes the paths and writes the files with go-diskfs.
func write(bfs *fat32.FileSystem, remove []string, files []File) error {
	return guard("write boot partition", func() error {
		for _, p := range remove {
			if err := removeIfPresent(bfs, p); err != nil {
				return err
			}
		}
		made := map[string]bool{}
		for _, f := range files {
			if err := writeFile(bfs, f, made); err != nil {
				return fmt.Errorf("write %s: %w", f.Path, err)
			}
		}
		return nil
	})
}

// patchedBootFiles are cmdline.txt and config.txt as e changes them:
// edits of the base's own files, which keep every line pibake does not own.
func (im *Image) patchedBootFiles(e Edit) ([]File, error) {
	var files []File
	if len(e.CmdlineAdd) > 0 || len(e.CmdlineRemove) > 0 {
		old, err := im.ReadBootFile("cmdline.txt")
		if err != nil {
			return nil, err
		}
		if bytes.Count(bytes.TrimSpace(old), []byte("\n")) > 0 {
			return nil, fmt.Errorf("boot partition: cmdline.txt has more than one line; the firmware reads only the first, so fix it before pibake edits it")
		}
		files = append(files, File{Path: "cmdline.txt", Data: []byte(patchCmdline(string(old), e.CmdlineAdd, e.CmdlineRemove))})
	}
	if e.ConfigTxt != nil {
		old, err := im.ReadBootFile("config.txt")
		if err != nil {
			return nil, fmt.Errorf("%w; every Raspberry Pi OS image has one, which pibake edits and never writes anew", err)
		}
		cfg, err := configtxt.Patch(old, e.ConfigTxt)
		if err != nil {
			return nil, fmt.Errorf("boot partition: %w", err)
		}
		files = append(files, File{Path: "config.txt", Data: cfg})
	}
	return files, nil
}

// removeIfPresent deletes a file or a directory tree. go-diskfs's FAT
// reader wants io/fs paths: relative, no leading slash.
func removeIfPresent(bfs *fat32.FileSystem, p string) error {
	p = strings.TrimPrefix(p, "/")
	fi, err := bfs.Stat(p)
	if err != nil {
		return nil // absent
	}
	if fi.IsDir() {
		entries, err := bfs.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Name() == "." || e.Name() == ".." {
				continue
			}
			if err := removeIfPresent(bfs, path.Join(p, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := bfs.Remove(p); err != nil {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// writeFile replaces (or creates) one file. An existing file is removed
// first, so a shorter replacement leaves no stale clusters behind.
func writeFile(bfs *fat32.FileSystem, f File, made map[string]bool) error {
	p := strings.TrimPrefix(f.Path, "/")
	dir := path.Dir(p)
	if dir != "." && !made[dir] {
		if err := bfs.Mkdir(dir); err != nil {
			return fmt.Errorf("make directory %s: %w", dir, err)
		}
		made[dir] = true
	}
	if fi, err := bfs.Stat(p); err == nil {
		if fi.IsDir() {
			return errors.New("a directory of that name exists")
		}
		if err := bfs.Remove(p); err != nil {
			return fmt.Errorf("remove old file: %w", err)
		}
	}
	out, err := bfs.OpenFile(p, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return err
	}
	var src io.Reader = bytes.NewReader(f.Data)
	if f.Source != "" {
		in, err := os.Open(f.Source)
		if err != nil {
			out.Close()
			return err
		}
		defer in.Close()
		src = in
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// need is the space files take: every file's clusters counted as new
// (conservative: replaced files free theirs only after) plus one cluster
// per new directory and for directory growth. sizes are the files' sizes,
// or nil to find them.
func (im *Image) need(files []File, sizes ...int64) int64 {
	cb := im.ClusterBytes()
	need := int64(0)
	dirs := map[string]bool{}
	for i, f := range files {
		size := int64(len(f.Data))
		if i < len(sizes) {
			size = sizes[i]
		} else if fi, err := os.Stat(f.Source); f.Source != "" && err == nil {
			size = fi.Size()
		}
		need += (size + cb - 1) / cb * cb
		if d := path.Dir("/" + f.Path); d != "/" {
			dirs[d] = true
		}
	}
	return need + int64(len(dirs)+1)*cb
}

// steerNeed is the room Steer keeps for the edit, more than need: hiding
// free clusters must never make an edit that fits run out of space, and
// need leaves out what go-diskfs may take on the way: a cluster for an
// empty file (Normalize frees it after), every ancestor directory of a
// file, and the new entries in every directory written to (one per name,
// and one long-name entry per 13 characters), rounded up to clusters
// with one more for each directory; and 8 clusters to spare.
func (im *Image) steerNeed(files []File) int64 {
	cb := im.ClusterBytes()
	entries := map[string]int64{} // bytes of new entries by directory
	for _, f := range files {
		for p := "/" + f.Path; p != "/"; p = path.Dir(p) {
			entries[path.Dir(p)] += 32 * (1 + (int64(len(path.Base(p)))+12)/13)
		}
	}
	clusters := int64(len(files) + 8)
	for _, b := range entries {
		clusters += (b+cb-1)/cb + 1
	}
	return im.need(files) + clusters*cb
}

// checkFits refuses an edit that does not fit before anything is written.
func (im *Image) checkFits(files []File, sizes []int64) error {
	free, err := im.FreeBootBytes()
	if err != nil {
		return err
	}
	need := im.need(files, sizes...)
	if need > free {
		return fmt.Errorf("boot partition (partition %d): the payload needs %d KiB but only %d KiB are free; nothing was written", im.BootPartition().Index, need/1024, free/1024)
	}
	return nil
}
