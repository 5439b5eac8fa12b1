package xzstream

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
	"github.com/pibake/pibake/internal/xztest"
)

// TestTrailerRoundTrip writes an index and footer and reads them back.
func TestTrailerRoundTrip(t *testing.T) {
	flags := []byte{0x00, 0x04} // CRC64
	records := []Record{{Unpadded: 1234, Uncompressed: 24 << 20}, {Unpadded: 17, Uncompressed: 3}}
	tr := Trailer(flags, records)
	footer := tr[len(tr)-12:]
	size, err := IndexSize(footer)
	if err != nil || size != int64(len(tr)-12) {
		t.Fatalf("IndexSize = %d, %v; want %d", size, err, len(tr)-12)
	}
	got, err := ParseIndex(tr[:size])
	if err != nil || !reflect.DeepEqual(got, records) {
		t.Errorf("ParseIndex = %v, %v; want %v", got, err, records)
	}
	if got[0].Padded() != 1236 {
		t.Errorf("Padded(1234) = %d", got[0].Padded())
	}
	tr[3] ^= 1 // inside the index: its CRC must catch it
	if _, err := ParseIndex(tr[:size]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("ParseIndex(damaged) = %v", err)
	}
	if _, err := IndexSize(make([]byte, 12)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("IndexSize(zeros) = %v", err)
	}
}

// TestWithSizes: a block as xz --threads=1 writes it (no sizes in its
// header) rewritten with its sizes is, to the real xz, a block with both
// sizes in its header ("cu" in xz --robot -lvv) in a sound stream
// (xz -t) that decompresses to the same bytes, for every check type; a
// damaged header is refused; a block that has them stays as it is.
func TestWithSizes(t *testing.T) {
	xzBin := testimage.Tool(t, "xz")
	data := bytes.Repeat([]byte("raspberry pi boot partition 0123456789\n"), 30000)
	for _, check := range []string{"none", "crc32", "crc64", "sha256"} {
		t.Run(check, func(t *testing.T) {
			s := xztest.Compress(t, data, "--threads=1", "-0", "--check="+check)
			size, _ := IndexSize(s[len(s)-12:])
			recs, err := ParseIndex(s[len(s)-12-int(size) : len(s)-12])
			if err != nil || len(recs) != 1 {
				t.Fatalf("ParseIndex = %v, %v", recs, err)
			}
			block := s[12 : 12+recs[0].Padded()]
			if block[1]&0xC0 != 0 {
				t.Fatalf("xz --threads=1 wrote sizes into the header (flags %#x): nothing to test", block[1])
			}
			got, unpadded, err := WithSizes(block, recs[0].Unpadded, recs[0].Uncompressed, CheckSize(s[7]))
			if err != nil {
				t.Fatal(err)
			}
			again, _, err := WithSizes(got, unpadded, recs[0].Uncompressed, CheckSize(s[7]))
			if err != nil || !bytes.Equal(again, got) {
				t.Errorf("WithSizes of a block with sizes changed it (%v)", err)
			}
			stream := append(append(append([]byte{}, s[:12]...), got...), Trailer(s[6:8], []Record{{unpadded, recs[0].Uncompressed}})...)
			path := filepath.Join(t.TempDir(), "s.xz")
			os.WriteFile(path, stream, 0o644)
			if out, err := exec.Command(xzBin, "-t", path).CombinedOutput(); err != nil {
				t.Fatalf("xz -t: %v %s", err, out)
			}
			if flags := xztest.SizeFlags(t, path); len(flags) != 1 || flags[0] != "cu" {
				t.Errorf("xz --robot -lvv: the block's size flags are %q; want cu", flags)
			}
			out, err := exec.Command(xzBin, "-dc", path).Output()
			if err != nil || !bytes.Equal(out, data) {
				t.Errorf("xz -dc gave %d bytes (%v); want the %d compressed", len(out), err, len(data))
			}
			damaged := append([]byte{}, block...)
			damaged[2] ^= 0xFF
			if _, _, err := WithSizes(damaged, recs[0].Unpadded, recs[0].Uncompressed, CheckSize(s[7])); !errors.Is(err, ErrCorrupt) {
				t.Errorf("WithSizes of a damaged header = %v; want ErrCorrupt", err)
			}
		})
	}
}
