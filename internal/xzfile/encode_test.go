package xzfile

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"

	"github.com/pibake/pibake/internal/testimage"
	"github.com/pibake/pibake/internal/xztest"
)

// TestCompress: both encoders, every check type pibake writes, both
// levels: the stream is one block (what nodeimage takes apart), the real
// xz accepts it (xz -t) and gives the data back byte for byte, says the
// check type asked for, and compressing again gives the same bytes.
func TestCompress(t *testing.T) {
	data := xztest.Payload(1 << 20)
	xzBin := testimage.Tool(t, "xz")
	for _, enc := range decoders(t) {
		for check, name := range checkNames {
			for _, level := range []Level{Fast, Small} {
				t.Run(fmt.Sprintf("%s/%s/-%d", enc.name, name, level), func(t *testing.T) {
					t.Setenv(xzEnv, enc.env)
					s, err := Compress(context.Background(), bytes.NewReader(data), check, level)
					if err != nil {
						t.Fatal(err)
					}
					if again, err := Compress(context.Background(), bytes.NewReader(data), check, level); err != nil || !bytes.Equal(again, s) {
						t.Errorf("compressing again gave other bytes (%v)", err)
					}
					// The system's xz, at the level asked, made it (or, for
					// the builtin, did not).
					if cli := xztest.Compress(t, data, "--threads=1", fmt.Sprintf("-%d", level), "--check="+name); bytes.Equal(cli, s) != (enc.env != "builtin") {
						t.Errorf("the same bytes as xz --threads=1 -%d --check=%s: %v; want %v", level, name, !bytes.Equal(cli, s), enc.env != "builtin")
					}
					path := filepath.Join(t.TempDir(), "s.xz")
					os.WriteFile(path, s, 0o644)
					list, err := exec.Command(xzBin, "--robot", "--list", path).CombinedOutput()
					if err != nil {
						t.Fatalf("xz --list: %v %s", err, list)
					}
					// file	streams	blocks	compressed	uncompressed	ratio	check
					want := regexp.MustCompile(`(?m)^file\t1\t1\t\d+\t` + "1048576" + `\t[^\t]+\t` + map[string]string{"none": "None", "crc32": "CRC32", "crc64": "CRC64", "sha256": "SHA-256"}[name] + `\t`)
					if !want.Match(list) {
						t.Errorf("xz --list: %s; want one stream of one block, check %s", list, name)
					}
					out, err := exec.Command(xzBin, "-dc", path).Output()
					if err != nil || !bytes.Equal(out, data) {
						t.Errorf("xz -dc gave %d bytes (%v); want the %d compressed", len(out), err, len(data))
					}
				})
			}
		}
	}
}

// TestEncoder: the name recorded for what compressed a node's blocks is
// pibake's own or the system xz's version, as PIBAKE_XZ chooses.
func TestEncoder(t *testing.T) {
	t.Setenv(xzEnv, "builtin")
	if got := Encoder(); got != "pibake" {
		t.Errorf("Encoder with %s=builtin = %q; want pibake", xzEnv, got)
	}
	bin := testimage.Tool(t, "xz")
	t.Setenv(xzEnv, bin)
	out, _ := exec.Command(bin, "--version").Output()
	want := "xz-" + strings.Fields(strings.SplitN(string(out), "\n", 2)[0])[3]
	if got := Encoder(); got != want {
		t.Errorf("Encoder with %s=%s = %q; want %q", xzEnv, bin, got, want)
	}
}

// endless is an input that cancels ctx once it has given after bytes, and
// never ends.
type endless struct {
	given, after int
	cancel       func()
}

func (r *endless) Read(p []byte) (int, error) {
	if r.given >= r.after {
		r.cancel()
	}
	for i := range p {
		p[i] = byte(r.given + i*7)
	}
	r.given += len(p)
	return len(p), nil
}

// TestCompressInterrupt: an interrupt (Ctrl-C) stops either encoder
// within a read and says so: the real xz killed while it reads, a stand-in
// that never reads its input (so pibake's write to it blocks) killed too,
// pibake's own compressor at its next read.
func TestCompressInterrupt(t *testing.T) {
	deaf := filepath.Join(t.TempDir(), "xz")
	os.WriteFile(deaf, []byte("#!/bin/sh\nexec sleep 600\n"), 0o755)
	for _, enc := range append(decoders(t), struct{ name, env string }{"xz that does not read", deaf}) {
		t.Run(enc.name, func(t *testing.T) {
			t.Setenv(xzEnv, enc.env)
			ctx, cancel := context.WithCancel(context.Background())
			r := &endless{after: 4 << 20, cancel: cancel}
			if enc.env == deaf {
				r.after = 0 // it takes no more than a pipe's worth
			}
			stopsOnInterrupt(t, "Compress", func() error {
				_, err := Compress(ctx, r, xz.CRC64, Fast)
				return err
			})
		})
	}
}

// TestCompressFailingXZ: an xz that fails (out of memory, say), after
// reading its input or before (so that pibake's write to it fails), is an
// error naming it and quoting what it said, never a stream.
func TestCompressFailingXZ(t *testing.T) {
	for name, script := range map[string]string{
		"after reading": "cat >/dev/null\necho 'xz: (stdin): Cannot allocate memory' >&2\nexit 1\n",
		"at once":       "echo 'xz: (stdin): Cannot allocate memory' >&2\nexit 1\n",
	} {
		t.Run(name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "xz")
			os.WriteFile(bad, []byte("#!/bin/sh\n"+script), 0o755)
			t.Setenv(xzEnv, bad)
			s, err := Compress(context.Background(), io.LimitReader(&endless{after: 1 << 40}, 4<<20), xz.CRC64, Fast)
			if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "Cannot allocate memory") {
				t.Errorf("Compress with a failing xz = %d bytes, %v; want an error naming %s and quoting it", len(s), err, bad)
			}
		})
	}
}

// TestCompressIgnoresXZOpt: xz reads options from XZ_OPT and XZ_DEFAULTS;
// a user's (a smaller --block-size, -e) must neither split the one block
// pibake takes apart nor change the bytes.
func TestCompressIgnoresXZOpt(t *testing.T) {
	t.Setenv(xzEnv, testimage.Tool(t, "xz"))
	data := xztest.Payload(1 << 20)
	want := xztest.Compress(t, data, "--threads=1", "-0", "--check=crc64")
	t.Setenv("XZ_OPT", "--block-size=64KiB -e")
	t.Setenv("XZ_DEFAULTS", "-9")
	got, err := Compress(context.Background(), bytes.NewReader(data), xz.CRC64, Fast)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("Compress with XZ_OPT and XZ_DEFAULTS set = %d bytes (%v); want the %d of xz -0 without them", len(got), err, len(want))
	}
}
