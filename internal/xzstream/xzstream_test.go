package xzstream

import (
	"errors"
	"reflect"
	"testing"
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
