package xzfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pibake/pibake/internal/progress"
)

// XZ Utils 5.4 and later decode a multi-block stream on every core, in C:
// measured on a 2-core machine with a Raspberry Pi OS-shaped 1.4 GB image,
// pibake's own parallel decoder took 1.5× as long as `xz -T0 -dc`. So
// pibake runs the system's xz when it has one that new, reading its output
// through a pipe and writing it itself: the same sparse output (64 KiB
// all-zero runs left as holes), progress, the size checked against the
// index, and an interrupt that kills xz. The pure-Go decoder stays for
// machines without xz (macOS and Windows, mostly) or with an older one,
// which decodes on one core only.

// xzEnv chooses the decoder: unset, the system's xz when it is 5.4 or
// later, else pibake's own; "builtin", always pibake's own; a path, that
// xz program.
const xzEnv = "PIBAKE_XZ"

var systemXZ struct {
	once sync.Once
	path string
}

// xzDecoder is the xz program to decompress with, or "" for pibake's own
// decoder.
func xzDecoder() string {
	switch v := os.Getenv(xzEnv); v {
	case "builtin":
		return ""
	case "":
		systemXZ.once.Do(func() { systemXZ.path = findSystemXZ() })
		return systemXZ.path
	default:
		return v
	}
}

// xzVersion matches `xz --version`'s first line: "xz (XZ Utils) 5.4.1".
var xzVersion = regexp.MustCompile(`XZ Utils\) (\d+)\.(\d+)`)

// findSystemXZ is the xz on PATH when it is 5.4 or later, else "".
func findSystemXZ() string {
	bin, err := exec.LookPath("xz")
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return ""
	}
	m := xzVersion.FindSubmatch(out)
	if m == nil {
		return ""
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	if major < 5 || major == 5 && minor < 4 {
		return ""
	}
	return bin
}

// decodeSystem decompresses src with the xz program bin on jobs threads,
// writing its output to out, which must come to total bytes.
func decodeSystem(ctx context.Context, bin, src string, out io.WriterAt, total int64, jobs int, done *progress.Counter) error {
	cmd := xzCommand(ctx, bin, "--decompress", "--stdout", "--threads="+strconv.Itoa(jobs), "--", src)
	stderr := &tailBuffer{max: 4 << 10}
	cmd.Stderr = stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s (set %s=builtin to decompress without it): %w", bin, xzEnv, err)
	}
	n, rerr := copySparse(ctx, pipe, out, total, done)
	if rerr != nil {
		cmd.Process.Kill()
	}
	werr := cmd.Wait()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case rerr != nil:
		return rerr
	case errors.As(werr, &exit) && exit.ExitCode() < 0:
		return fmt.Errorf("%s was stopped (%v)", bin, werr)
	case werr != nil:
		return fmt.Errorf("%w: %s: %s", ErrCorrupt, bin, stderr.String())
	case n != total:
		return fmt.Errorf("%w: %s gave %d bytes, the index says %d", ErrCorrupt, bin, n, total)
	}
	return nil
}

// copySparse writes what r gives to out from offset 0 (all-zero runs left
// as holes), checking ctx between reads; it fails past total bytes.
func copySparse(ctx context.Context, r io.Reader, out io.WriterAt, total int64, done *progress.Counter) (int64, error) {
	buf := make([]byte, 1<<20)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, err := io.ReadFull(r, buf)
		if k > 0 {
			if n+int64(k) > total {
				return n, fmt.Errorf("%w: more data than the index says (%d bytes)", ErrCorrupt, total)
			}
			if err := writeNonZero(out, buf[:k], n); err != nil {
				return n, err
			}
			n += int64(k)
			done.Add(int64(k))
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// tailBuffer keeps the last max bytes written to it: xz's error message,
// not a flood.
type tailBuffer struct {
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return strings.TrimSpace(t.b.String()) }
