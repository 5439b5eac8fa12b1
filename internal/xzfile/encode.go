package xzfile

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pibake/pibake/internal/ctxio"
	"github.com/ulikunitz/xz"
)

// Compressing: measured on one 24 MiB block of a Raspberry Pi OS-shaped
// image's binaries on this project's 2-core machine, ulikunitz/xz (pure
// Go, no presets) took 9.6 s and made 9.5 MB; XZ Utils 5.4.1's xz -0 took
// 1.4 s and made 9.0 MB, -6 15.6 s and 7.8 MB. A node built with
// --compress compresses again the few blocks its edit touches, so pibake
// compresses with the same xz it decodes with (PIBAKE_XZ), one block per
// xz process on one thread, and with its own compressor when there is
// none.

// Level is how hard Compress tries: Fast for the blocks a node compresses
// again on every build, Small for what is made once and copied into every
// node (the .xz of a raw base), as pi-gen compresses Raspberry Pi OS.
type Level int

const (
	Fast  Level = 0 // xz -0
	Small Level = 6 // xz -6, xz's default
)

// Encoder names what Compress compresses with: "pibake" (its own, pure
// Go: the same bytes on every machine) or the system xz's version, e.g.
// "xz-5.4.1". The same input, check and level give the same bytes for the
// same Encoder; XZ Utils may change its output between versions.
func Encoder() string {
	bin := xzDecoder()
	if bin == "" {
		return "pibake"
	}
	return toolVersion(bin)
}

var toolVersions sync.Map // path → "xz-5.4.1"

// xzFullVersion matches the version in `xz --version`'s first line.
var xzFullVersion = regexp.MustCompile(`XZ Utils\) (\d+\.\d+(?:\.\d+)?)`)

// toolVersion is "xz-" and the version `bin --version` prints, or
// "xz-unknown".
func toolVersion(bin string) string {
	if v, ok := toolVersions.Load(bin); ok {
		return v.(string)
	}
	v := "xz-unknown"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "--version").Output(); err == nil {
		if m := xzFullVersion.FindSubmatch(out); m != nil {
			v = "xz-" + string(m[1])
		}
	}
	toolVersions.Store(bin, v)
	return v
}

// Compress compresses what r gives as one xz stream of one block with the
// check type check (xz.None, xz.CRC32, xz.CRC64, xz.SHA256), with the
// Encoder; an interrupt stops it within one 256 KiB read.
func Compress(ctx context.Context, r io.Reader, check byte, level Level) ([]byte, error) {
	r = ctxio.Reader{Ctx: ctx, R: r}
	if bin := xzDecoder(); bin != "" {
		return compressSystem(ctx, bin, r, check, level)
	}
	return compressBuiltin(r, check)
}

// compressBuiltin is Compress with ulikunitz/xz, which has no levels.
func compressBuiltin(r io.Reader, check byte) ([]byte, error) {
	var buf bytes.Buffer
	cfg := xz.WriterConfig{BlockSize: 1 << 62, CheckSum: check}
	if check == xz.None {
		cfg = xz.WriterConfig{BlockSize: 1 << 62, NoCheckSum: true}
	}
	zw, err := cfg.NewWriter(&buf)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyBuffer(zw, r, make([]byte, 256<<10)); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

var checkNames = map[byte]string{xz.None: "none", xz.CRC32: "crc32", xz.CRC64: "crc64", xz.SHA256: "sha256"}

// compressSystem is Compress with the xz program bin: single-threaded
// (one block; the output of xz -T1 does not depend on the machine), from
// a pipe, so the same bytes whether the input is a file or not.
func compressSystem(ctx context.Context, bin string, r io.Reader, check byte, level Level) ([]byte, error) {
	name, ok := checkNames[check]
	if !ok {
		return nil, fmt.Errorf("xz check type %#x: not one pibake writes", check)
	}
	cmd := xzCommand(ctx, bin, "--compress", "--stdout", "--format=xz", "--threads=1",
		"--check="+name, "-"+strconv.Itoa(int(level)))
	var out bytes.Buffer
	stderr := &tailBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = &out, stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s (set %s=builtin to compress without it): %w", bin, xzEnv, err)
	}
	in := &readErr{r: r}
	_, werr := io.CopyBuffer(stdin, in, make([]byte, 256<<10))
	if cerr := stdin.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		cmd.Process.Kill()
	}
	err = cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case in.err != nil:
		return nil, in.err
	case err != nil: // also when xz stopped reading: what it said is why
		return nil, fmt.Errorf("%s: %w: %s", bin, err, stderr.String())
	case werr != nil:
		return nil, fmt.Errorf("write to %s: %w", bin, werr)
	}
	return out.Bytes(), nil
}

// readErr remembers its reader's error, to tell it from a write's.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// xzCommand runs the xz program bin with args, killed on ctx's end and
// never waited on longer than a second after; without XZ_OPT and
// XZ_DEFAULTS, which xz reads as options: a --block-size there would
// split a block pibake takes apart, an -e change the bytes.
func xzCommand(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = time.Second
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XZ_OPT=") && !strings.HasPrefix(kv, "XZ_DEFAULTS=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	return cmd
}
