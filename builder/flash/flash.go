// Package flash writes disk images to block devices and files the way
// bmaptool does (the data of the mapped ranges; the rest is zeroed, by the
// kernel where it can), several at once, reads every
// target back past the page cache to verify it, and refuses the disks it
// must not touch: the running system's, mounted or held ones, partitions,
// fixed disks unless asked, and disks too small for the image.
//
// A target is never left looking finished when it is not: its first block
// (the partition table) is zeroed before anything else is written and
// written last, after everything else is on the device; a target that
// fails, is interrupted or reads back wrong has its first block zeroed
// again, so it cannot boot a half-written image.
package flash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pibake/pibake/internal/progress"
)

// BlockSize is the unit of the mapped ranges (bmaptool's default).
const BlockSize = 4096

// chunkSize is how much is written or read at once: small enough that an
// interrupt stops a slow SD card within a fraction of a second, large
// enough for full speed on an SSD.
const chunkSize = 4 << 20

// headSize is what is zeroed first and written last: the MBR and then
// some, a whole block.
const headSize = BlockSize

// Source is an image to write: its bytes, and the ranges that hold data
// with their SHA-256 (the same as its .bmap gives). Bytes outside the
// ranges are zeros in the image; unlike bmaptool, which leaves them as
// the card had them, Write zeros them on the target (cheaply: the kernel
// does it, often the device) and reads them back, so that a used card
// ends up identical to the image.
type Source struct {
	// Name is what the image is, for messages: a node's hostname or a file.
	Name   string
	R      io.ReaderAt
	Size   int64
	Ranges []Range
	// SHA256, when set, is the whole image's (unmapped bytes as zeros), as
	// SHA256SUMS lists it: the target must read back with it too.
	SHA256 string
}

// Range is [Off, End) of an image, with the SHA-256 of its bytes.
type Range struct {
	Off, End int64
	SHA256   string
}

// Mapped is how many bytes the ranges hold.
func (s *Source) Mapped() int64 {
	var n int64
	for _, r := range s.Ranges {
		n += r.End - r.Off
	}
	return n
}

// Work is the progress total of writing s to a target: every byte is
// written (or zeroed) and read back.
func (s *Source) Work() int64 { return 2 * s.Size }

// State is how a target ended.
type State string

// The states of a Result.
const (
	// Verified: written, synced and read back identical to the image.
	Verified State = "verified"
	// Failed: writing or reading back failed, or what was read back
	// differs; the target must not be booted.
	Failed State = "failed"
	// Interrupted: stopped before it was verified; the target must not be
	// booted.
	Interrupted State = "interrupted"
)

// Result is what writing one target did.
type Result struct {
	Target Target
	Source string
	State  State
	// SHA256 is the target's first Size bytes as read back, every one
	// of them: when Verified, the image's SHA-256 as SHA256SUMS lists it.
	SHA256 string
	Err    error
	// Boot says whether the target can boot: after a failure, whether its
	// first block was zeroed (or never written).
	Boot    string
	Written int64
	Elapsed time.Duration
	At      time.Time
}

// writeZerosOnly, set by a test, makes zeroOut write zeros as it does
// for a device that refuses BLKZEROOUT.
var writeZerosOnly bool

// afterWrite, when set by a test, runs on the target after everything is
// written and synced and before it is read back: a corrupted write that
// the read-back must catch.
var afterWrite func(path string)

// Write writes src to t, verifies it and returns what happened. It never
// panics on the target's behalf and always returns a Result: one
// target's failure is its own.
func Write(ctx context.Context, src *Source, t Target, done *progress.Counter) Result {
	start := time.Now()
	res := Result{Target: t, Source: src.Name, At: start.UTC()}
	w, err := openTarget(t, src.Size)
	if err != nil {
		res.State, res.Err, res.Boot = Failed, err, "untouched"
		res.Elapsed = time.Since(start)
		return res
	}
	j := &job{ctx: ctx, src: src, w: w, done: done, res: &res}
	j.end(j.run())
	res.Elapsed = time.Since(start)
	return res
}

// stage is how far a write has come: what a failure leaves on the target.
type stage int

const (
	// untouched: nothing written yet.
	untouched stage = iota
	// headZeroed: the first block is zeroed and the rest being written:
	// the target holds no partition table.
	headZeroed
	// headWriting: the rest is written and synced, and the first block is
	// being (or was) written: the image may look complete.
	headWriting
)

// job is one Write: the stages in order, and how far they came.
type job struct {
	ctx   context.Context
	src   *Source
	w     *writer
	done  *progress.Counter
	res   *Result
	stage stage
	// head is the image's first block, written last; nil when no range
	// holds it.
	head []byte
}

// run does the stages of a write in order, stopping at the first error.
func (j *job) run() error {
	for _, stage := range []func() error{j.checkFits, j.zeroHead, j.writeRanges, j.writeHead, j.readBack} {
		if err := stage(); err != nil {
			return err
		}
	}
	return nil
}

// checkFits refuses ranges the device cannot take as whole blocks (a
// third-party .bmap with 512-byte blocks, a disk with 4096-byte sectors):
// they would fail half-way, after the first block was zeroed.
func (j *job) checkFits() error { return j.w.fits(j.src) }

// zeroHead zeros the first block, so that from now on until the end the
// target holds no partition table: whatever stops the write, it is not
// taken for a good image.
func (j *job) zeroHead() error {
	if err := j.w.wipeHead(); err != nil {
		return fmt.Errorf("write %s: %w", j.w.t.Path, err)
	}
	j.stage = headZeroed
	return nil
}

// writeRanges writes every mapped range except the first block, and
// zeros the bytes between them: zeros in the image, but not on a used
// card, so that the target holds the image byte for byte, as the
// whole-image SHA-256 read back says. Then it syncs.
func (j *job) writeRanges() error {
	w, src, path := j.w, j.src, j.w.t.Path
	pos := int64(0)
	for _, r := range src.Ranges {
		off := r.Off
		if off < headSize {
			j.head = make([]byte, headSize)
			if _, err := readFull(src.R, j.head[:min(headSize, r.End)], 0); err != nil {
				return fmt.Errorf("read %s: %w", src.Name, err)
			}
			off = min(headSize, r.End)
		}
		for off < r.End {
			if err := j.ctx.Err(); err != nil {
				return err
			}
			n := min(int64(chunkSize), r.End-off)
			if err := w.copyFrom(src.R, off, n); err != nil {
				return fmt.Errorf("%s at byte %d: %w", path, off, err)
			}
			j.res.Written += n
			j.done.Add(n)
			off += n
		}
		if err := w.zero(j.ctx, max(pos, headSize), r.Off, j.done); err != nil {
			return err
		}
		pos = r.End
	}
	if err := w.zero(j.ctx, max(pos, headSize), src.Size, j.done); err != nil {
		return err
	}
	if err := w.sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return j.ctx.Err()
}

// writeHead writes the first block, last, and syncs it.
func (j *job) writeHead() error {
	if j.head != nil {
		j.stage = headWriting
		if err := j.w.writeAt(j.head, 0); err != nil {
			return fmt.Errorf("%s at byte 0: %w", j.w.t.Path, err)
		}
		if err := j.w.sync(); err != nil {
			return fmt.Errorf("sync %s: %w", j.w.t.Path, err)
		}
		j.res.Written += int64(len(j.head))
		j.done.Add(int64(len(j.head)))
	}
	if afterWrite != nil {
		afterWrite(j.w.t.Path)
	}
	return nil
}

// readBack reads everything back, past the page cache.
func (j *job) readBack() error {
	sum, err := j.w.verify(j.ctx, j.src, j.done)
	j.res.SHA256 = sum
	return err
}

// end records how the write ended: verified, or failed (interrupted) with
// what that left on the target, whose first block is zeroed again if the
// image may look complete; then it closes the target.
func (j *job) end(err error) {
	res := j.res
	if err == nil {
		res.State, res.Boot = Verified, "ready"
		j.done.Finish()
	} else {
		res.State, res.Err = Failed, err
		if j.ctx.Err() != nil && errors.Is(err, j.ctx.Err()) {
			res.State = Interrupted
		}
		res.Boot = j.leaves()
	}
	if cerr := j.w.close(); cerr != nil && res.State == Verified {
		res.State, res.Err, res.Boot = Failed, fmt.Errorf("close %s: %w", j.res.Target.Path, cerr), "do not boot it"
	}
}

// leaves says what a failed write leaves on the target, zeroing its first
// block again where the image may look complete.
func (j *job) leaves() string {
	switch j.stage {
	case untouched:
		return "untouched"
	case headZeroed:
		return "its first block was zeroed before writing and never written: it will not boot"
	}
	// The image is complete but not verified: unbootable too.
	if werr := j.w.wipeHead(); werr != nil {
		return fmt.Sprintf("COULD NOT ZERO its first block (%v): do not boot it", werr)
	}
	return "its first block was zeroed again: it will not boot"
}

// verify reads the whole image back from the target, compares each range
// with its SHA-256 and checks that the bytes between them are zeros, and
// returns the SHA-256 of all it read.
func (w *writer) verify(ctx context.Context, src *Source, done *progress.Counter) (string, error) {
	if err := w.dropCache(); err != nil {
		return "", fmt.Errorf("read back %s: %w", w.t.Path, err)
	}
	whole := sha256.New()
	pos := int64(0)
	var bad []string
	var err error
	for _, r := range src.Ranges {
		if !w.readZeros(ctx, whole, pos, r.Off, done, &err) {
			if err != nil {
				return "", err
			}
			bad = append(bad, fmt.Sprintf("bytes %d-%d, zeros in the image", pos, r.Off-1))
		}
		h := sha256.New()
		for off := r.Off; off < r.End; {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			n := min(int64(chunkSize), r.End-off)
			b, err := w.readAt(off, n)
			if err != nil {
				return "", fmt.Errorf("read back %s at byte %d: %w", w.t.Path, off, err)
			}
			h.Write(b)
			whole.Write(b)
			done.Add(n)
			off += n
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != r.SHA256 {
			bad = append(bad, fmt.Sprintf("bytes %d-%d", r.Off, r.End-1))
		}
		pos = r.End
	}
	if !w.readZeros(ctx, whole, pos, src.Size, done, &err) {
		if err != nil {
			return "", err
		}
		bad = append(bad, fmt.Sprintf("bytes %d-%d, zeros in the image", pos, src.Size-1))
	}
	sum := hex.EncodeToString(whole.Sum(nil))
	if len(bad) > 0 {
		more := ""
		if len(bad) > 3 {
			more = fmt.Sprintf(" and %d more ranges", len(bad)-3)
			bad = bad[:3]
		}
		return sum, fmt.Errorf("%s reads back different from the image (%s%s): the device may be faulty or fake", w.t.Path, strings.Join(bad, "; "), more)
	}
	if src.SHA256 != "" && sum != src.SHA256 {
		return sum, fmt.Errorf("%s reads back with sha256 %s…, not the %s… its built image has", w.t.Path, sum[:12], src.SHA256[:12])
	}
	return sum, nil
}

// readZeros reads [from, to) back from the target (bytes the image has
// as zeros, between its ranges) into whole, and reports whether they are
// all zeros. They are read, not assumed: the whole-image SHA-256 is then
// the target's real content. A read error is put in *errp.
func (w *writer) readZeros(ctx context.Context, whole hash.Hash, from, to int64, done *progress.Counter, errp *error) bool {
	ok := true
	for off := from; off < to; {
		if err := ctx.Err(); err != nil {
			*errp = err
			return false
		}
		n := min(int64(chunkSize), to-off)
		b, err := w.readAt(off, n)
		if err != nil {
			*errp = fmt.Errorf("read back %s at byte %d: %w", w.t.Path, off, err)
			return false
		}
		whole.Write(b)
		ok = ok && allZero(b)
		done.Add(n)
		off += n
	}
	return ok
}

var zeros = make([]byte, 1<<20)

func allZero(b []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zeros))
		if !bytes.Equal(b[:k], zeros[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}

// zero makes [from, to) of the target zeros, as the image has them there.
// A plain file was truncated, so its holes are zeros already; a block
// device is zeroed one chunk at a time (so that an interrupt stops it
// soon), by the kernel where it can (BLKZEROOUT: no data crosses from
// here, and the device may do it itself), else by writing zeros.
func (w *writer) zero(ctx context.Context, from, to int64, done *progress.Counter) error {
	if from >= to {
		return nil
	}
	if !w.direct {
		done.Add(to - from) // holes of the truncated file
		return nil
	}
	if from%w.align != 0 {
		return fmt.Errorf("zero %s from byte %d: not a multiple of its %d-byte blocks (the image's ranges are)", w.t.Path, from, w.align)
	}
	to = roundUp(to, w.align) // past the image's end is not the image's: zeros as writeAt pads
	for off := from; off < to; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(chunkSize), to-off)
		if err := w.zeroOut(off, n); err != nil {
			return fmt.Errorf("zero %s at byte %d: %w", w.t.Path, off, err)
		}
		done.Add(n)
		off += n
	}
	return nil
}

// writeZeros writes n bytes of zeros at off (n at most a chunk).
func (w *writer) writeZeros(off, n int64) error {
	b := w.buf[:n]
	clear(b)
	_, err := w.f.WriteAt(b, off)
	return err
}

// fits checks that src's ranges start and end on the target's blocks
// (direct I/O writes whole device blocks; the image's very end is padded).
func (w *writer) fits(src *Source) error {
	for _, r := range src.Ranges {
		for _, at := range []int64{r.Off, r.End} {
			if at%w.align != 0 && at != src.Size {
				return fmt.Errorf("%s has %d-byte blocks, and %s has a range boundary at byte %d, inside one; nothing written (a .bmap made with a smaller block size: make it again with bmaptool create, whose default is 4096)", w.t.Path, w.align, src.Name, at)
			}
		}
	}
	return nil
}

// readFull reads len(p) bytes at off of r; an image ending early is an
// error, not zeros.
func readFull(r io.ReaderAt, p []byte, off int64) (int, error) {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("image ends at byte %d, before %d: %w", off+int64(n), off+int64(len(p)), io.ErrUnexpectedEOF)
	}
	return n, err
}

// writer is an open target.
type writer struct {
	t      Target
	f      *os.File
	direct bool  // O_DIRECT: every transfer is aligned to align
	align  int64 // the device's logical block size, 1 for a file
	buf    []byte
	// noZeroOut: the device refused BLKZEROOUT; zeros are written.
	noZeroOut bool
}

func (w *writer) copyFrom(r io.ReaderAt, off, n int64) error {
	b := w.buf[:n]
	if _, err := readFull(r, b, off); err != nil {
		return fmt.Errorf("read image: %w", err)
	}
	return w.writeAt(b, off)
}

// writeAt writes b at off. With direct I/O a length that is not a whole
// number of device blocks (only the image's very end) is padded with
// zeros: past the image's end is not the image's.
func (w *writer) writeAt(b []byte, off int64) error {
	if w.direct {
		n := roundUp(int64(len(b)), w.align)
		if &b[0] != &w.buf[0] || n != int64(len(b)) {
			copy(w.buf, b)
			clear(w.buf[len(b):n])
			b = w.buf[:n]
		}
	}
	_, err := w.f.WriteAt(b, off)
	return err
}

func (w *writer) readAt(off, n int64) ([]byte, error) {
	m := n
	if w.direct {
		m = roundUp(n, w.align)
	}
	got, err := w.f.ReadAt(w.buf[:m], off)
	if int64(got) >= n {
		return w.buf[:n], nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("the target ends at byte %d: %w", off+int64(got), io.ErrUnexpectedEOF)
	}
	return nil, err
}

// wipeHead zeros the first block and syncs it.
func (w *writer) wipeHead() error {
	if err := w.writeAt(make([]byte, headSize), 0); err != nil {
		return err
	}
	return w.sync()
}

func (w *writer) sync() error { return w.f.Sync() }

func (w *writer) close() error {
	err := w.f.Close()
	if w.direct {
		freeBuf(w.buf) // from mmap, for its alignment
	}
	return err
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }
