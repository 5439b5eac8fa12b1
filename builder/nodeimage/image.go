// Package nodeimage makes a node's image files from the base image and an
// edit of its boot partition: the image itself (a clone of the base,
// edited, read back, synced and hashed), its bmaptool block map and its
// multi-block .img.xz (reusing the base's own xz blocks). It knows disks,
// not recipes: what to write comes as a diskimg.Edit, where to write as
// files the caller created.
package nodeimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"slices"
	"strings"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/configtxt"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/progress"
)

// Base is what every node's image is made from.
type Base struct {
	// Path is the raw base image.
	Path string
	// EditSpan is how much of the image, from the start, editing a node's
	// image reads or writes: the partition table, the boot partition and
	// the root file system's superblock (which diskimg.Open checks).
	EditSpan int64
	// HeadSpan is how much of the image, from the start, every node's
	// edit rewrites (diskimg.Image.BootMetadataEnd): a raw base's .xz
	// ends its first block there (BaseBlocks).
	HeadSpan int64
	// Known are the block-range sums of the base outside its boot
	// partition, which every node shares.
	Known RangeSums
	// XZ is the base's own multi-block .xz, whose blocks past the boot
	// partition every node's .img.xz reuses; nil when there is none.
	XZ *BaseXZ
}

// Write makes a node's image in out (a new, empty file): a clone of the
// base with the edit applied to its boot partition, read back, synced to
// disk; and returns its SHA-256 and size. The start of the image, up to
// the end of the boot partition, is cloned and edited first; then the
// rest is copied and synced while the checksum runs, reading what was
// copied from the base: the sync waits on the disk, the checksum on the
// CPU, each about a second for a 1.5 GiB image. out is closed when Write
// returns; on an error the caller removes it.
func Write(ctx context.Context, out *os.File, b Base, e diskimg.Edit, prog progress.Func, task string) (sum string, size int64, how Method, err error) {
	c, err := Head(ctx, out, b, e)
	if err != nil {
		return "", 0, "", err
	}
	copied := make(chan error, 1)
	go func() {
		err := c.copyRange(ctx, b.EditSpan, c.size)
		if err != nil {
			c.abort()
			copied <- fmt.Errorf("copy base image: %w", err)
			return
		}
		copied <- c.finish()
	}()
	sum, err = splitSum(ctx, c.dst, b.Path, b.EditSpan, c.size, progress.New(prog, task, c.size))
	if cerr := <-copied; cerr != nil {
		err = cerr
	}
	return sum, c.size, c.method, err
}

// Head starts a node's image in out as a clone of the base (as large,
// sparse) whose first EditSpan bytes are copied, edited and read back;
// past EditSpan the clone is the caller's to finish (Write copies the
// rest; flash reads the rest from the base). On an error out is closed,
// and the caller removes it.
func Head(ctx context.Context, out *os.File, b Base, e diskimg.Edit) (*Clone, error) {
	c, err := startClone(out, b.Path)
	if err != nil {
		return nil, fmt.Errorf("copy base image: %w", err)
	}
	if err := c.copyRange(ctx, 0, b.EditSpan); err != nil {
		c.abort()
		return nil, fmt.Errorf("copy base image: %w", err)
	}
	if err := applyEdit(c.dst, e); err != nil {
		c.abort()
		return nil, err
	}
	if err := verify(c.dst, e); err != nil {
		c.abort()
		return nil, fmt.Errorf("verify %s: %w", c.dst, err)
	}
	return c, nil
}

// Size is the image's size: the base's.
func (c *Clone) Size() int64 { return c.size }

// Close closes the clone's files without syncing: a head that flash
// reads and then removes.
func (c *Clone) Close() error {
	c.in.Close()
	return c.out.Close()
}

// splitSum is the SHA-256 of [0, split) of head followed by [split, size)
// of tail.
func splitSum(ctx context.Context, head, tail string, split, size int64, done *progress.Counter) (string, error) {
	h := countingHash{Hash: sha256.New(), done: done}
	for _, part := range []struct {
		path     string
		from, to int64
	}{{head, 0, split}, {tail, split, size}} {
		f, err := os.Open(part.path)
		if err != nil {
			return "", err
		}
		err = files.HashRange(ctx, h, f, part.from, part.to)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	done.Finish()
	return hex.EncodeToString(h.Sum(nil)), nil
}

// countingHash counts what it hashes, for a progress display.
type countingHash struct {
	hash.Hash
	done *progress.Counter
}

func (h countingHash) Write(p []byte) (int, error) {
	h.done.Add(int64(len(p)))
	return h.Hash.Write(p)
}

func applyEdit(path string, e diskimg.Edit) error {
	im, err := diskimg.Open(path, true)
	if err != nil {
		return err
	}
	if err := im.Apply(e); err != nil {
		im.Close()
		return err
	}
	return im.CloseUnsynced() // Write syncs the whole image
}

// verify reads back every file written and the command line.
func verify(path string, e diskimg.Edit) error {
	im, err := diskimg.Open(path, false)
	if err != nil {
		return err
	}
	defer im.Close()
	for _, f := range e.Files {
		got, err := im.ReadBootFile(f.Path)
		if err != nil {
			return err
		}
		want := f.Data
		if f.Source != "" {
			if want, err = os.ReadFile(f.Source); err != nil {
				return err
			}
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s reads back different from what was written", f.Path)
		}
	}
	cmdline, err := im.ReadBootFile("cmdline.txt")
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, a := range strings.Fields(string(cmdline)) {
		have[a] = true
	}
	for _, a := range e.CmdlineAdd {
		if !have[a] {
			return fmt.Errorf("cmdline.txt lacks %s", a)
		}
	}
	if e.ConfigTxt != nil {
		cfg, err := im.ReadBootFile("config.txt")
		if err != nil {
			return err
		}
		if block, _, err := configtxt.Block(cfg); err != nil || !slices.Equal(block, e.ConfigTxt) {
			return fmt.Errorf("config.txt: pibake's block reads back as %q, not what was written (%v)", block, err)
		}
	}
	return nil
}
