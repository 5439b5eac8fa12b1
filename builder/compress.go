package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/pibake/pibake/internal/xzstream"
	"github.com/ulikunitz/xz"
	"golang.org/x/sync/errgroup"
)

// xzBlockSize is the uncompressed size of one block of a .img.xz: what
// xz -T0 -6 uses (3 × the 8 MiB dictionary), so xz -T0 and pibake itself
// decompress the result in parallel.
const xzBlockSize = 24 << 20

// compressXZ writes src as a multi-block .xz stream to dst. Blocks are
// compressed in parallel (each by ulikunitz/xz as a one-block stream of its
// own, whose block and index record are then taken over), and written in
// order; the result is byte-identical whatever the number of jobs.
func compressXZ(ctx context.Context, src, dst string, jobs int) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = writeXZ(ctx, out, in, fi.Size(), jobs)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

type xzPart struct {
	header       []byte // stream header of the one-block stream
	block        []byte // the block, padded
	unpadded     uint64
	uncompressed uint64
}

func writeXZ(ctx context.Context, w io.Writer, r io.ReaderAt, size int64, jobs int) error {
	if jobs < 1 {
		jobs = runtime.NumCPU()
	}
	n := int((size + xzBlockSize - 1) / xzBlockSize)
	if n == 0 {
		n = 1
	}
	// Workers compress blocks (one errgroup: the first error or an
	// interrupt stops them all, each within one read of its input); a
	// writer goroutine writes them in order. This goroutine alone starts
	// workers, and only then waits for them. At most jobs+1 blocks are in
	// memory at once.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	results := make([]chan xzPart, n)
	for i := range results {
		results[i] = make(chan xzPart, 1)
	}
	ahead := make(chan struct{}, jobs+1)
	var header []byte
	var records []xzPart
	written := make(chan error, 1)
	go func() {
		var err error
		header, records, err = writeBlocks(gctx, w, results, ahead)
		if err != nil {
			cancel() // stop the workers and the feeding below
		}
		written <- err
	}()
feed:
	for i := 0; i < n; i++ {
		select {
		case ahead <- struct{}{}:
		case <-gctx.Done():
			break feed
		}
		g.Go(func() error {
			off := int64(i) * xzBlockSize
			part, err := compressBlock(gctx, io.NewSectionReader(r, off, min(xzBlockSize, size-off)))
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
	recs := make([]xzstream.Record, len(records))
	for i, r := range records {
		recs[i] = xzstream.Record{Unpadded: r.unpadded, Uncompressed: r.uncompressed}
	}
	_, err = w.Write(xzstream.Trailer(header[6:8], recs))
	return err
}

// writeBlocks writes compressed blocks to w in order as they arrive,
// freeing a place for the next block after each.
func writeBlocks(ctx context.Context, w io.Writer, results []chan xzPart, ahead chan struct{}) ([]byte, []xzPart, error) {
	var header []byte
	var records []xzPart
	for i := range results {
		var part xzPart
		select {
		case part = <-results[i]:
		case <-ctx.Done():
			// Done also when every worker finished and the pool closed:
			// a finished block is then waiting.
			select {
			case part = <-results[i]:
			default:
				return nil, nil, ctx.Err()
			}
		}
		<-ahead
		if header == nil {
			header = part.header
			if _, err := w.Write(header); err != nil {
				return nil, nil, err
			}
		}
		if _, err := w.Write(part.block); err != nil {
			return nil, nil, err
		}
		part.block = nil
		records = append(records, part)
	}
	return header, records, nil
}

// compressBlock compresses one chunk as a one-block xz stream and takes it
// apart into its header, block and index record.
func compressBlock(ctx context.Context, r io.Reader) (xzPart, error) {
	var buf bytes.Buffer
	zw, err := xz.WriterConfig{BlockSize: 1 << 62, CheckSum: xz.CRC64}.NewWriter(&buf)
	if err != nil {
		return xzPart{}, err
	}
	// Small reads: an interrupt stops the block within one of them.
	if _, err := io.CopyBuffer(zw, ctxReader{ctx: ctx, r: r}, make([]byte, 256<<10)); err != nil {
		return xzPart{}, err
	}
	if err := zw.Close(); err != nil {
		return xzPart{}, err
	}
	s := buf.Bytes()
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
	return xzPart{
		header:       append([]byte(nil), s[:12]...),
		block:        s[12 : 12+padded],
		unpadded:     unpadded,
		uncompressed: uncompressed,
	}, nil
}

// ctxReader stops a long read when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
