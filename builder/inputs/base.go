package inputs

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/nodeimage"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/recipes"
)

// Base is what every node's build needs to know about the base image.
type Base struct {
	nodeimage.Base
	Image   *base.Image
	Release diskimg.Release
	// Stamp is the one timestamp every write gets.
	Stamp time.Time
	// Airgap maps each air-gap file to its SHA-256, hashed once per run.
	Airgap map[string]string
	// Supply is set by LearnSupply (a build's records need it).
	Supply Supply
}

// Close releases the base image (in the cache) and its .xz.
func (b *Base) Close() {
	b.XZ.Close()
	b.Image.Release()
}

// FirstbootBase is what decides how a payload is activated on the base.
func (b *Base) FirstbootBase() firstboot.Base {
	return firstboot.Base{CloudInit: b.Release.CloudInit, SystemdFirstBoot: b.Release.SystemdFirstBoot()}
}

// FetchBase fetches, verifies and decompresses the base image (holding it
// in the cache until Close), learns its release and the one timestamp
// every write gets, refuses a base that cannot be built from, and hashes
// what every node shares.
func (s *Session) FetchBase(ctx context.Context) error {
	spec, pin := s.R.Image.Source, s.R.Image.SHA256
	if s.Opt.Image != "" {
		spec, pin = s.Opt.Image, ""
	}
	src, err := base.ParseSource(spec, pin)
	if err != nil {
		return err
	}
	bopt := s.Opt.Base
	bopt.Logf = s.Logf
	if bopt.Progress == nil {
		bopt.Progress = s.Opt.Progress
	}
	img, err := base.Fetch(ctx, src, bopt)
	if err != nil {
		return err
	}
	b, err := s.learnBase(ctx, img, bopt.Cache)
	if err != nil {
		img.Release()
		return err
	}
	s.Base = b
	return nil
}

// learnBase is what FetchBase learns about a fetched base image.
func (s *Session) learnBase(ctx context.Context, img *base.Image, cache base.Cache) (*Base, error) {
	b, err := inspectBase(img)
	if err != nil {
		return nil, err
	}
	if err := checkBase(b.Release); err != nil {
		return nil, err
	}
	if b.Release.Style == diskimg.StyleBooted {
		s.Logf("warning: the base image's cmdline.txt has neither first-boot marker (init=…firstboot or resize): it may have booted before; its root partition will not grow on first boot")
	}
	if b.Known, err = nodeimage.BaseRangeSums(ctx, cache, img); err != nil {
		return nil, err
	}
	if b.Airgap, err = airgapSums(ctx, s.R.Cluster.Airgap); err != nil {
		return nil, err
	}
	if !s.Compress {
		return b, nil
	}
	fi, err := os.Stat(img.Path)
	if err != nil {
		return nil, err
	}
	if b.XZ, err = nodeimage.OpenBaseXZ(img.XZ, fi.Size()); err != nil || b.XZ != nil {
		return b, err
	}
	b.XZ, err = s.baseBlocks(ctx, img, cache, fi.Size(), b.HeadSpan)
	return b, err
}

// baseBlocks is a multi-block .xz of a base that has none (raw, or a
// single-block .xz), made once and cached, for --compress to copy blocks
// from: every node after the first then costs little more than a plain one.
func (s *Session) baseBlocks(ctx context.Context, img *base.Image, cache base.Cache, size, head int64) (*nodeimage.BaseXZ, error) {
	if img.XZ != "" {
		s.Logf("the base .xz is a single block (or mixes check types): no blocks to copy")
	}
	path, err := nodeimage.BaseBlocks(ctx, cache, img, head, s.Opt.Jobs, s.Logf, s.Opt.Progress)
	if err != nil {
		return nil, err
	}
	bx, err := nodeimage.OpenBaseXZ(path, size)
	if err == nil && bx == nil {
		err = fmt.Errorf("%s: not the multi-block .xz of the base; remove it and build again", path)
	}
	return bx, err
}

// inspectBase reads the release and picks the timestamp for every entry
// written: SOURCE_DATE_EPOCH when set, else the base image's newest
// timestamp, so the output never depends on the clock.
func inspectBase(img *base.Image) (*Base, error) {
	im, err := diskimg.Open(img.Path, false)
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	defer im.Close()
	boot, root := im.BootPartition(), im.RootPartition()
	b := &Base{Image: img, Base: nodeimage.Base{Path: img.Path, EditSpan: max(boot.Offset()+boot.Size(), root.Offset()+4096), HeadSpan: im.BootMetadataEnd()}}
	if b.Release, err = im.DetectRelease(); err != nil {
		return nil, fmt.Errorf("base image %s: %w", img.Path, err)
	}
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		sec, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", v)
		}
		b.Stamp = time.Unix(sec, 0).UTC()
		return b, nil
	}
	if b.Stamp, err = im.NewestBootTime(); err != nil {
		return nil, fmt.Errorf("base image %s: %w", img.Path, err)
	}
	return b, nil
}

// checkBase refuses a base image that cannot boot or that was already set
// up for some machine: its settings (Wi-Fi key, SSH keys, static address,
// user) would leak into every node.
func checkBase(rel diskimg.Release) error {
	if err := rel.Bootable(); err != nil {
		return fmt.Errorf("base image: %w", err)
	}
	if len(rel.Customised) > 0 {
		return fmt.Errorf("base image: it was already customised for a machine (%s); build from an unmodified Raspberry Pi OS image (pibake fetch, or the .img.xz as downloaded), never from a card or image that Raspberry Pi Imager or pibake has written",
			strings.Join(rel.Customised, "; "))
	}
	return nil
}

// airgapSums hashes the air-gap files once per run.
func airgapSums(ctx context.Context, a *recipes.Airgap) (map[string]string, error) {
	sums := map[string]string{}
	if a == nil {
		return sums, nil
	}
	for _, p := range []string{a.K3sBinary, a.Images, a.InstallScript} {
		if p == "" {
			continue
		}
		sum, _, err := files.SHA256(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("air-gap file: %w", err)
		}
		sums[p] = sum
	}
	return sums, nil
}
