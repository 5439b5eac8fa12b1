package inputs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pibake/pibake/builder/delta"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/dpkg"
	"github.com/pibake/pibake/internal/atomicfile"
)

// Supply is what a build's SBOMs and delta.json say of the base image:
// the same for every node and every build from that base.
type Supply struct {
	// Delta is the base's chunk digests and partition table (delta.json's
	// base).
	Delta *delta.Base `json:"delta"`
	// Packages are the Debian packages installed in the base's root.
	Packages []dpkg.Package `json:"packages"`
}

// supplyCacheVersion changes when Supply's meaning does: an entry of
// another version is computed again.
const supplyCacheVersion = 1

type supplyEntry struct {
	Version int `json:"version"`
	Supply
}

// LearnSupply sets s.Base.Supply: computed once per base image (one read
// of all of it, for the chunk digests) and kept in the cache under the
// base's SHA-256, like the block map's range sums. Only a build needs it;
// flash and init do not call it.
func (s *Session) LearnSupply(ctx context.Context) error {
	img := s.Base.Image
	path := filepath.Join(s.Opt.Base.Cache.Dir, "supply", img.SHA256+".json")
	var e supplyEntry
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &e) == nil && e.Version == supplyCacheVersion && e.Delta != nil {
		s.Base.Supply = e.Supply
		return nil
	}
	d, err := delta.HashBase(ctx, img.Path)
	if err != nil {
		return fmt.Errorf("base image %s: chunk digests: %w", img.Path, err)
	}
	im, err := diskimg.Open(img.Path, false)
	if err != nil {
		return fmt.Errorf("base image: %w", err)
	}
	pkgs, err := dpkg.Read(im)
	im.Close()
	if err != nil {
		return fmt.Errorf("base image %s: %w", img.Path, err)
	}
	e = supplyEntry{Version: supplyCacheVersion, Supply: Supply{Delta: d, Packages: pkgs}}
	s.Base.Supply = e.Supply
	if s.Opt.Base.Cache.Dir == "" {
		return nil
	}
	b, err := json.Marshal(e)
	if err == nil && os.MkdirAll(filepath.Dir(path), 0o755) == nil {
		atomicfile.WriteFile(path, b, 0o644) // only a speed-up if it fails
	}
	return nil
}
