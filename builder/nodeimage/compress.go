package nodeimage

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/ctxio"
	"github.com/pibake/pibake/internal/progress"
	"github.com/pibake/pibake/internal/sparse"
	"github.com/pibake/pibake/internal/xzfile"
	"github.com/pibake/pibake/internal/xzstream"
	"github.com/ulikunitz/xz"
	"golang.org/x/sync/errgroup"
)

// xzBlockSize is the uncompressed size of one block of a .img.xz: what
// xz -T0 -6 uses (3 × the 8 MiB dictionary), so xz -T0 and pibake itself
// decompress the result in parallel.
const xzBlockSize = 24 << 20

// CompressXZ writes the image at src as a multi-block .xz stream to a new
// file dst. Blocks are compressed in parallel (each by xzfile.Compress as
// a one-block stream of its own, whose block and index record are then
// taken over), and written in order; the result is byte-identical
// whatever the number of jobs.
func CompressXZ(ctx context.Context, src, dst string, jobs int) error {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = Compress(ctx, src, out, nil, "", 0, jobs, nil)
	return err
}

// BaseXZ is the base image's own .xz, open for the whole build, with its
// block index: a node's image equals the base past its boot partition, so
// the base's blocks there are the node's blocks too.
type BaseXZ struct {
	f      *os.File
	blocks []base.XZBlock
}

// OpenBaseXZ opens the base's .xz when its blocks can be reused: one
// stream flag set (a single stream, or streams alike) with a check type
// the compressor writes too. It returns nil otherwise.
func OpenBaseXZ(path string, rawSize int64) (*BaseXZ, error) {
	if path == "" {
		return nil, nil
	}
	f, blocks, total, err := base.OpenXZBlocks(path)
	if err != nil {
		return nil, err
	}
	if total != rawSize || len(blocks) < 2 {
		f.Close()
		return nil, nil // a single block holds the boot partition: nothing to reuse
	}
	for _, b := range blocks {
		if !bytes.Equal(b.Header[6:8], blocks[0].Header[6:8]) || xzstream.CheckSize(b.Header[7]) < 0 || b.Header[6] != 0 {
			f.Close()
			return nil, nil
		}
	}
	return &BaseXZ{f: f, blocks: blocks}, nil
}

// BaseBlocks is a multi-block .xz of the base image for --compress to
// copy blocks from when the base has none (a raw image, or a single-block
// .xz): made once, in parallel, and kept in the cache beside the raw
// image, named by the base's SHA-256, what compressed it
// (xzfile.Encoder) and head: the nodes' .img.xz are made of these blocks,
// so the same base and encoder give the same bytes, and a machine with
// another encoder (or PIBAKE_XZ=builtin) makes and keeps its own. Its
// first block ends at head, where what every node's edit rewrites ends
// (Base.HeadSpan), so a node compresses that again, not 24 MiB of
// firmware after it; then come 24 MiB blocks, at multiples of 24 MiB.
func BaseBlocks(ctx context.Context, c base.Cache, img *base.Image, head int64, jobs int, logf func(string, ...any), report progress.Func) (string, error) {
	path := c.BlocksPath(img.SHA256, xzfile.Encoder(), head)
	err := c.Make(ctx, path, logf, func(tmp string) error {
		start := time.Now()
		logf("making a multi-block .xz of the base for --compress with %s (once; kept in the cache)", xzfile.Encoder())
		out, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		fi, err := os.Stat(img.Path)
		if err != nil {
			out.Close()
			return err
		}
		if err := compressWhole(ctx, img.Path, out, head, jobs, progress.New(report, "base: xz blocks", fi.Size())); err != nil {
			return err
		}
		logf("made the base's multi-block .xz in %s", time.Since(start).Round(100*time.Millisecond))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("multi-block .xz of the base: %w", err)
	}
	return path, nil
}

// compressWhole writes the image at src as a multi-block .xz to out (a
// new, empty file, closed when it returns) in 24 MiB blocks, the first
// ending at cut when that is shorter (0: no cut), compressed as small as
// xz's default makes them: what is made once and copied many times.
func compressWhole(ctx context.Context, src string, out *os.File, cut int64, jobs int, done *progress.Counter) error {
	in, err := os.Open(src)
	if err != nil {
		out.Close()
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		out.Close()
		return err
	}
	items := blockItems(fi.Size(), cut)
	markHoles(in, items)
	err = writeXZ(ctx, out, in, nil, items, xz.CRC64, xzfile.Small, jobs, done)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close closes the base's .xz; a nil BaseXZ is fine.
func (b *BaseXZ) Close() {
	if b != nil {
		b.f.Close()
	}
}

// xzItem is one block of the output: compressed from [off, off+n) of the
// image, or, with reuse set, that block of the base's .xz copied as it is.
type xzItem struct {
	off, n int64
	reuse  *base.XZBlock
	// hole: the range is a hole in the image, all zeros, compressed once
	// per size (zeroBlocks) rather than once per block.
	hole bool
}

// zeroBlocks are the compressed forms of all-zero blocks by size and
// check type: the compressor is deterministic, so these are the bytes
// compressing each such block would give, made once. Images are mostly
// holes (a boot partition's free space, an unfilled root).
var zeroBlocks sync.Map // zeroKey → *zeroBlock

type zeroKey struct {
	n       int64
	check   byte
	level   xzfile.Level
	encoder string
}

type zeroBlock struct {
	once sync.Once
	part xzPart
	err  error
}

// compressZeros is compressBlock of n zero bytes, shared.
func compressZeros(ctx context.Context, n int64, check byte, level xzfile.Level) (xzPart, error) {
	key := zeroKey{n, check, level, xzfile.Encoder()}
	v, _ := zeroBlocks.LoadOrStore(key, &zeroBlock{})
	z := v.(*zeroBlock)
	z.once.Do(func() { z.part, z.err = compressBlock(ctx, io.LimitReader(zeroReader{}, n), check, level) })
	if z.err != nil {
		zeroBlocks.Delete(key) // an interrupt: not a fact about zeros
	}
	return z.part, z.err
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// markHoles marks the items to compress that lie wholly in a hole of f.
func markHoles(f *os.File, items []xzItem) {
	for i := range items {
		if items[i].reuse == nil && items[i].n > 0 && len(sparse.Extents(f, items[i].off, items[i].n)) == 0 {
			items[i].hole = true
		}
	}
}

// XZStats says how a node's .img.xz was made from the base's .xz: how
// many of its blocks were copied verbatim and which were compressed
// again, with the bytes of the node that differ from the base in each
// (what made it necessary).
type XZStats struct {
	Blocks     int            `json:"blocks"`
	Copied     int            `json:"copied"`
	Compressed []CompressedXZ `json:"compressed,omitempty"`
	// NoBase says why no block could be copied, when none was.
	NoBase string `json:"no_base,omitempty"`
	// Encoder is what compressed the blocks compressed again
	// (xzfile.Encoder): their bytes depend on it.
	Encoder string `json:"encoder,omitempty"`
}

// CompressedXZ is one block compressed again: its place in the image
// [Start, End) and the ranges of it where the node differs from the base.
type CompressedXZ struct {
	Index   int        `json:"index"`
	Start   int64      `json:"start"`
	End     int64      `json:"end"`
	Changed [][2]int64 `json:"changed"`
	// Why names what the node's edit wrote there (diskimg.Owners).
	Why []string `json:"why"`
}

// Compress writes the image at src as a multi-block .xz to out (a new,
// empty file, closed when Compress returns).
// Without a base .xz it compresses the whole image in 24 MiB blocks, in
// parallel. With one, the output keeps the base's block boundaries: a
// block wholly at or past same (where the image is the base by
// construction) is copied verbatim, index record included, and so is one
// before it whose bytes compare equal to the base's (baseRaw), which most
// of the boot partition's blocks do; only the blocks holding what the node
// changed are compressed again, in parallel, with the base's check type.
func Compress(ctx context.Context, src string, out *os.File, bx *BaseXZ, baseRaw string, same int64, jobs int, done *progress.Counter) (XZStats, error) {
	var stats XZStats
	in, err := os.Open(src)
	if err != nil {
		out.Close()
		return stats, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		out.Close()
		return stats, err
	}
	// Compressing every block is making a base's .xz, once, whose blocks
	// every node copies: as small as pi-gen makes them. Blocks a node
	// compresses again are a few per node on every build: fast.
	check, items, level := xz.CRC64, blockItems(fi.Size(), 0), xzfile.Small
	stats.NoBase = "the base has no multi-block .xz"
	var reuseSrc io.ReaderAt
	if bx != nil {
		check, reuseSrc, level, stats.NoBase = bx.blocks[0].Header[7], bx.f, xzfile.Fast, ""
		stats.Encoder = xzfile.Encoder()
		if items, stats.Compressed, err = reuseItems(ctx, in, baseRaw, bx.blocks, same); err == nil {
			err = explain(src, stats.Compressed)
		}
		if err != nil {
			out.Close()
			return stats, err
		}
	}
	markHoles(in, items)
	stats.Blocks = len(items)
	for _, it := range items {
		if it.reuse != nil {
			stats.Copied++
		}
	}
	err = writeXZ(ctx, out, in, reuseSrc, items, check, level, jobs, done)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return stats, err
}

// reuseItems plans the output on the base's blocks: each reused, or
// compressed again when it holds a byte of the node that differs from
// the base (those are returned, with the differing ranges).
func reuseItems(ctx context.Context, node *os.File, baseRaw string, blocks []base.XZBlock, same int64) ([]xzItem, []CompressedXZ, error) {
	raw, err := os.Open(baseRaw)
	if err != nil {
		return nil, nil, err
	}
	defer raw.Close()
	items := make([]xzItem, len(blocks))
	var again []CompressedXZ
	for i := range blocks {
		b := &blocks[i]
		items[i] = xzItem{off: b.OutOffset, n: b.Uncompressed, reuse: b}
		if b.OutOffset >= same {
			continue
		}
		changed, err := diffRanges(ctx, node, raw, b.OutOffset, b.Uncompressed)
		if err != nil {
			return nil, nil, err
		}
		if len(changed) > 0 {
			items[i].reuse = nil
			again = append(again, CompressedXZ{Index: i, Start: b.OutOffset, End: b.OutOffset + b.Uncompressed, Changed: changed})
		}
	}
	return items, again, nil
}

// explain names, for each block compressed again, what the node's edit
// wrote where it differs from the base.
func explain(img string, blocks []CompressedXZ) error {
	if len(blocks) == 0 {
		return nil
	}
	im, err := diskimg.Open(img, false)
	if err != nil {
		return err
	}
	defer im.Close()
	for i := range blocks {
		if blocks[i].Why, err = im.Owners(blocks[i].Changed); err != nil {
			return fmt.Errorf("%s: %w", img, err)
		}
	}
	return nil
}

// diffUnit is the granularity of the differences diffRanges reports: a
// sector.
const diffUnit = 512

// diffRanges compares [off, off+n) of two sparse files and returns the
// ranges, in sectors, where they differ: only where either holds data,
// since holes in both read as the same zeros. Most of a boot partition
// is a hole in both.
func diffRanges(ctx context.Context, a, b *os.File, off, n int64) ([][2]int64, error) {
	bufA, bufB := make([]byte, 1<<20), make([]byte, 1<<20)
	var out [][2]int64
	for _, e := range mergeExtents(sparse.Extents(a, off, n), sparse.Extents(b, off, n)) {
		for pos := e[0]; pos < e[1]; {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			k := min(int64(len(bufA)), e[1]-pos)
			if _, err := a.ReadAt(bufA[:k], pos); err != nil {
				return nil, err
			}
			if _, err := b.ReadAt(bufB[:k], pos); err != nil {
				return nil, err
			}
			if !bytes.Equal(bufA[:k], bufB[:k]) {
				out = appendDiffs(out, bufA[:k], bufB[:k], pos)
			}
			pos += k
		}
	}
	return out, nil
}

// appendDiffs adds the sectors where x and y (at pos) differ to ranges,
// joining neighbours.
func appendDiffs(ranges [][2]int64, x, y []byte, pos int64) [][2]int64 {
	for i := 0; i < len(x); i += diffUnit {
		j := min(i+diffUnit, len(x))
		if bytes.Equal(x[i:j], y[i:j]) {
			continue
		}
		start, end := pos+int64(i), pos+int64(j)
		if n := len(ranges); n > 0 && ranges[n-1][1] == start {
			ranges[n-1][1] = end
			continue
		}
		ranges = append(ranges, [2]int64{start, end})
	}
	return ranges
}

// mergeExtents is the union of two sorted lists of [start, end) extents.
func mergeExtents(a, b [][2]int64) [][2]int64 {
	all := append(append([][2]int64(nil), a...), b...)
	slices.SortFunc(all, func(x, y [2]int64) int { return cmp.Compare(x[0], y[0]) })
	var out [][2]int64
	for _, e := range all {
		if n := len(out); n > 0 && e[0] <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], e[1])
			continue
		}
		out = append(out, e)
	}
	return out
}

// blockItems cuts [0, end) into blocks to compress: at multiples of
// 24 MiB, and at cut when it falls inside the first block (0: no cut); an
// empty image is one empty block.
func blockItems(end, cut int64) []xzItem {
	first := min(xzBlockSize, end)
	items := []xzItem{{off: 0, n: first}}
	if cut > 0 && cut < first {
		items = []xzItem{{off: 0, n: cut}, {off: cut, n: first - cut}}
	}
	for off := int64(xzBlockSize); off < end; off += xzBlockSize {
		items = append(items, xzItem{off: off, n: min(xzBlockSize, end-off)})
	}
	return items
}

type xzPart struct {
	block        []byte // the block, padded
	unpadded     uint64
	uncompressed uint64
}

// writeXZ writes one xz stream of the items' blocks to w: a stream header
// for check, the blocks in order, the index and the footer.
func writeXZ(ctx context.Context, w io.Writer, r, reuseSrc io.ReaderAt, items []xzItem, check byte, level xzfile.Level, jobs int, done *progress.Counter) error {
	if jobs < 1 {
		jobs = runtime.NumCPU()
	}
	// Workers compress blocks (one errgroup: the first error or an
	// interrupt stops them all, each within one read of its input); a
	// writer goroutine writes them in order, copying reused blocks
	// itself. This goroutine alone starts workers, and only then waits
	// for them. At most jobs+1 compressed blocks are in memory at once.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	results := make([]chan xzPart, len(items))
	for i := range results {
		results[i] = make(chan xzPart, 1)
	}
	ahead := make(chan struct{}, jobs+1)
	var records []xzstream.Record
	written := make(chan error, 1)
	go func() {
		var err error
		records, err = writeBlocks(gctx, ctx, w, streamHeader(check), items, results, ahead, reuseSrc, done)
		if err != nil {
			cancel() // stop the workers and the feeding below
		}
		written <- err
	}()
feed:
	for i, it := range items {
		if it.reuse != nil {
			continue
		}
		select {
		case ahead <- struct{}{}:
		case <-gctx.Done():
			break feed
		}
		g.Go(func() error {
			part, err := compressItem(gctx, r, it, check, level)
			if err != nil {
				return err
			}
			results[i] <- part
			return nil
		})
	}
	err := g.Wait()
	if werr := <-written; werr != nil && (err == nil || errors.Is(err, context.Canceled)) {
		err = werr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return err
	}
	_, err = w.Write(xzstream.Trailer([]byte{0, check}, records))
	return err
}

// compressItem compresses one item: a hole as the shared zero block.
func compressItem(ctx context.Context, r io.ReaderAt, it xzItem, check byte, level xzfile.Level) (xzPart, error) {
	if it.hole {
		return compressZeros(ctx, it.n, check, level)
	}
	return compressBlock(ctx, io.NewSectionReader(r, it.off, it.n), check, level)
}

// streamHeader is an xz stream header: magic, flags (the check type), and
// the flags' CRC-32.
func streamHeader(check byte) []byte {
	h := []byte("\xfd7zXZ\x00\x00")
	h = append(h, check)
	return binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(h[6:8]))
}

// writeBlocks writes the blocks to w in order: compressed ones as they
// arrive (freeing a place for the next after each), reused ones copied
// from reuseSrc. It returns the index records. ctx is the workers' (done
// when they are), copyCtx the interrupt, which alone stops a copy: reused
// blocks come last, often after every worker has finished.
func writeBlocks(ctx, copyCtx context.Context, w io.Writer, header []byte, items []xzItem, results []chan xzPart, ahead chan struct{}, reuseSrc io.ReaderAt, done *progress.Counter) ([]xzstream.Record, error) {
	if _, err := w.Write(header); err != nil {
		return nil, err
	}
	var records []xzstream.Record
	for i, it := range items {
		if b := it.reuse; b != nil {
			if err := copyBlock(copyCtx, w, reuseSrc, b.Offset, b.Padded()); err != nil {
				return nil, fmt.Errorf("copy block at byte %d of the base .xz: %w", b.Offset, err)
			}
			records = append(records, xzstream.Record{Unpadded: uint64(b.Unpadded), Uncompressed: uint64(b.Uncompressed)})
			done.Add(it.n)
			continue
		}
		var part xzPart
		select {
		case part = <-results[i]:
		case <-ctx.Done():
			// Done also when every worker finished and the pool closed:
			// a finished block is then waiting.
			select {
			case part = <-results[i]:
			default:
				return nil, ctx.Err()
			}
		}
		<-ahead
		if _, err := w.Write(part.block); err != nil {
			return nil, err
		}
		records = append(records, xzstream.Record{Unpadded: part.unpadded, Uncompressed: part.uncompressed})
		done.Add(it.n)
	}
	done.Finish()
	return records, nil
}

// copyBlock copies n bytes at off of src to the end of w: inside the
// kernel between two files (copy_file_range, in 64 MiB steps so that an
// interrupt stops it), else through memory.
func copyBlock(ctx context.Context, w io.Writer, src io.ReaderAt, off, n int64) error {
	out, okOut := w.(*os.File)
	in, okIn := src.(*os.File)
	if okOut && okIn {
		pos, err := out.Seek(0, io.SeekCurrent)
		if err == nil {
			for done := int64(0); done < n && err == nil; {
				if err = ctx.Err(); err != nil {
					return err
				}
				k := min(n-done, 64<<20)
				if err = copyRangeTo(out, pos+done, in, off+done, k); err == nil {
					done += k
				}
			}
			if err == nil {
				_, err = out.Seek(pos+n, io.SeekStart)
				return err
			}
			if !errors.Is(err, errNoCopyRange) {
				return err
			}
			if _, err := out.Seek(pos, io.SeekStart); err != nil {
				return err
			}
		}
	}
	_, err := io.Copy(w, ctxio.Reader{Ctx: ctx, R: io.NewSectionReader(src, off, n)})
	return err
}

// compressBlock compresses one chunk as a one-block xz stream
// (xzfile.Compress) and takes it apart into its header, block and index
// record.
func compressBlock(ctx context.Context, r io.Reader, check byte, level xzfile.Level) (xzPart, error) {
	s, err := xzfile.Compress(ctx, r, check, level)
	if err != nil {
		return xzPart{}, err
	}
	if len(s) < 24 {
		return xzPart{}, errors.New("xz: stream too short")
	}
	// The footer says how long the index is; the index holds one record.
	indexSize, err := xzstream.IndexSize(s[len(s)-12:])
	if err != nil {
		return xzPart{}, err
	}
	records, err := xzstream.ParseIndex(s[len(s)-12-int(indexSize) : len(s)-12])
	if err != nil || len(records) != 1 {
		return xzPart{}, fmt.Errorf("xz: a one-block stream with %d blocks (%v)", len(records), err)
	}
	unpadded, uncompressed := records[0].Unpadded, records[0].Uncompressed
	padded := (unpadded + 3) &^ 3
	if uint64(len(s)) < 12+padded {
		return xzPart{}, errors.New("xz: stream too short for its index")
	}
	// Sizes in the header, as xz -T0 writes them: without them xz -T0
	// decodes the .img.xz on one core.
	block, unpadded, err := xzstream.WithSizes(s[12:12+padded], unpadded, uncompressed, xzstream.CheckSize(check))
	if err != nil {
		return xzPart{}, err
	}
	return xzPart{block: block, unpadded: unpadded, uncompressed: uncompressed}, nil
}
