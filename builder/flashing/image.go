package flashing

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/flash"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/progress"
)

// FlashImage writes a built image (.img, or .img.xz) to the targets. Its
// ranges and their sums come from its .bmap beside it (required for an
// .img.xz; for an .img without one, from its data extents, hashed here).
// When the image is in a pibake output directory that lists it, the
// device must read back with the SHA-256 listed there, and the results
// are recorded in its manifest.json under the directory's lock.
func FlashImage(ctx context.Context, path string, opt Options) ([]flash.Result, error) {
	logf := opt.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	src, closeSrc, err := imageSource(ctx, path)
	if err != nil {
		return nil, err
	}
	defer closeSrc()
	dir, file := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	outDir := ""
	if outdir.IsOutDir(dir) {
		outDir = dir
	}
	if err := checkTargets(opt, src.Size, path, outDir); err != nil {
		return nil, err
	}
	// Asked before the lock is taken, as Flash does: a prompt left open
	// must not hold up a build of the directory.
	if opt.Confirm != nil {
		if err := opt.Confirm(src.Size, opt.Targets); err != nil {
			return nil, err
		}
	}
	var d *outdir.Dir
	builds := map[string]string{}
	if outDir != "" {
		if d, err = outdir.Open(ctx, dir, outdir.Options{Wait: opt.Wait, Logf: logf}); err != nil {
			return nil, err
		}
		defer d.Close()
		for _, e := range d.Manifest().Nodes {
			if e.File == file || e.XZ == file {
				src.SHA256, src.Name = e.SHA256, e.Hostname
				builds[e.Hostname] = e.BuildID()
			}
		}
	}
	results := make([]flash.Result, len(opt.Targets))
	var wg sync.WaitGroup
	for i, t := range opt.Targets {
		wg.Go(func() {
			results[i] = flash.Write(ctx, src, t.Target, progress.New(opt.Progress, file+" → "+t.Target.Path, src.Work()))
			logResult(logf, results[i])
		})
	}
	wg.Wait()
	if d != nil {
		if err := d.Update(func(m *outdir.Manifest) { m.Flashes = appendFlashes(m.Flashes, results, builds) }); err != nil {
			return results, err
		}
	}
	return results, outcome(ctx, results)
}

// imageSource opens a built image as a flash source: an .img read
// directly, an .img.xz decompressed at random offsets (its blocks, as
// pibake and pi-gen make it). The ranges are its .bmap's.
func imageSource(ctx context.Context, path string) (*flash.Source, func(), error) {
	bmapPath := strings.TrimSuffix(path, ".xz") + ".bmap"
	if _, err := os.Stat(path); err != nil {
		return nil, nil, fmt.Errorf("image: %w", err)
	}
	switch {
	case strings.HasSuffix(path, ".img.xz"):
		if !files.Exists(bmapPath) {
			return nil, nil, fmt.Errorf("%s has no block map %s beside it; flash the .img, or rebuild with pibake build (it writes the .bmap)", path, bmapPath)
		}
		x, err := base.OpenXZ(path)
		if err != nil {
			return nil, nil, fmt.Errorf("open %s: %w", path, err)
		}
		src := &flash.Source{Name: path, R: x, Size: x.Size()}
		if err := readBmap(bmapPath, src); err != nil {
			x.Close()
			return nil, nil, err
		}
		return src, func() { x.Close() }, nil
	case strings.HasSuffix(path, ".img"):
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, fmt.Errorf("open %s: %w", path, err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		src := &flash.Source{Name: path, R: f, Size: fi.Size()}
		if files.Exists(bmapPath) {
			err = readBmap(bmapPath, src)
		} else {
			var s *flash.Source
			if s, err = splitSource(ctx, path, f, f, 0, fi.Size(), nil); err == nil {
				src.Ranges = s.Ranges
			}
		}
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		return src, func() { f.Close() }, nil
	}
	return nil, nil, fmt.Errorf("%s is neither an .img nor an .img.xz", path)
}

// bmapDoc is the part of a bmaptool block map (format 2.x) flash reads.
type bmapDoc struct {
	Version      string `xml:"version,attr"`
	ImageSize    string `xml:"ImageSize"`
	BlockSize    string `xml:"BlockSize"`
	ChecksumType string `xml:"ChecksumType"`
	FileChecksum string `xml:"BmapFileChecksum"`
	Ranges       []struct {
		Chksum string `xml:"chksum,attr"`
		Span   string `xml:",chardata"`
	} `xml:"BlockMap>Range"`
}

// readBmap fills src's ranges from a block map, after checking the map's
// own checksum.
func readBmap(path string, src *flash.Source) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("block map: %w", err)
	}
	var doc bmapDoc
	if err := xml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("block map %s: %w", path, err)
	}
	bad := func(what string) error {
		return fmt.Errorf("block map %s: %s; regenerate it (pibake build, or bmaptool create)", path, what)
	}
	if !strings.HasPrefix(doc.Version, "2.") || strings.TrimSpace(doc.ChecksumType) != "sha256" {
		return bad(fmt.Sprintf("version %q with %q checksums; flash reads version 2 with sha256", doc.Version, strings.TrimSpace(doc.ChecksumType)))
	}
	fileSum := strings.TrimSpace(doc.FileChecksum)
	sum := sha256.Sum256(bytes.Replace(b, []byte(fileSum), []byte(strings.Repeat("0", len(fileSum))), 1))
	if hex.EncodeToString(sum[:]) != fileSum {
		return bad("its own checksum does not match: it is damaged")
	}
	size, err1 := strconv.ParseInt(strings.TrimSpace(doc.ImageSize), 10, 64)
	bs, err2 := strconv.ParseInt(strings.TrimSpace(doc.BlockSize), 10, 64)
	if err1 != nil || err2 != nil || bs <= 0 {
		return bad("no valid ImageSize or BlockSize")
	}
	if size != src.Size {
		return bad(fmt.Sprintf("it is for an image of %d bytes, and %s holds %d", size, src.Name, src.Size))
	}
	for _, r := range doc.Ranges {
		first, last, found := strings.Cut(strings.TrimSpace(r.Span), "-")
		a, err1 := strconv.ParseInt(first, 10, 64)
		z, err2 := a, error(nil)
		if found {
			z, err2 = strconv.ParseInt(last, 10, 64)
		}
		if err1 != nil || err2 != nil || z < a || a*bs >= size || len(src.Ranges) > 0 && a*bs < src.Ranges[len(src.Ranges)-1].End {
			return bad(fmt.Sprintf("bad range %q", r.Span))
		}
		src.Ranges = append(src.Ranges, flash.Range{Off: a * bs, End: min((z+1)*bs, size), SHA256: r.Chksum})
	}
	return nil
}
