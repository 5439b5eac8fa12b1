package xzfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/internal/testimage"
	"github.com/ulikunitz/xz"
)

// TestCompress: both encoders, every check type pibake writes, both
// levels: the stream is one block (what nodeimage takes apart), the real
// xz accepts it (xz -t) and gives the data back byte for byte, says the
// check type asked for, and compressing again gives the same bytes.
func TestCompress(t *testing.T) {
	data := testPayload(1 << 20)
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
			errc := make(chan error, 1)
			go func() {
				_, err := Compress(ctx, r, xz.CRC64, Fast)
				errc <- err
			}()
			select {
			case err := <-errc:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Compress after an interrupt = %v; want context.Canceled", err)
				}
			case <-time.After(30 * time.Second): // liveness, not a timing claim
				t.Fatal("Compress did not stop after an interrupt")
			}
		})
	}
}

// TestCompressFailingXZ: an xz that fails (out of memory, say) is an error
// naming it and quoting what it said, never a stream.
func TestCompressFailingXZ(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "xz")
	os.WriteFile(bad, []byte("#!/bin/sh\ncat >/dev/null\necho 'xz: (stdin): Cannot allocate memory' >&2\nexit 1\n"), 0o755)
	t.Setenv(xzEnv, bad)
	s, err := Compress(context.Background(), io.LimitReader(&endless{after: 1 << 40}, 1<<20), xz.CRC64, Fast)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "Cannot allocate memory") {
		t.Errorf("Compress with a failing xz = %d bytes, %v; want an error naming %s and quoting it", len(s), err, bad)
	}
}
