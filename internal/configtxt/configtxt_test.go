package configtxt

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

// pi5Block is a block as firstboot renders one (firstboot.ConfigTxt).
var pi5Block = []string{"[all]", "[pi5]", "dtparam=pciex1", "dtparam=pciex1_gen=2", "[all]"}

// TestPatch: the block goes after the base, which stays byte for
// byte; patching again changes nothing; no lines remove the block; the
// block reads back.
func TestPatch(t *testing.T) {
	tests := []struct {
		name string
		base string
		// kept is what of the base stands before the block.
		kept string
	}{
		{name: "bookworm stock", base: testimage.Bookworm().ConfigTxt()},
		{name: "trixie stock", base: testimage.Trixie().ConfigTxt()},
		{name: "no newline at the end", base: "arm_64bit=1\n[all]", kept: "arm_64bit=1\n[all]\n"},
		{name: "ends with a blank line", base: "arm_64bit=1\n\n"},
		{name: "empty", base: ""},
		{name: "crlf", base: "dtparam=audio=on\r\n[all]\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kept := tt.kept
			if kept == "" {
				kept = tt.base
			}
			nl := "\n"
			if strings.Contains(tt.base, "\r\n") {
				nl = "\r\n"
			}
			want := kept + nl + configBegin + nl + strings.Join(pi5Block, nl) + nl + configEnd + nl
			got, err := Patch([]byte(tt.base), pi5Block)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("Patch = %q; want %q", got, want)
			}
			if !bytes.HasPrefix(got, []byte(tt.base)) {
				t.Errorf("the base is not kept byte for byte before the block")
			}
			again, err := Patch(got, pi5Block)
			if err != nil || !bytes.Equal(again, got) {
				t.Errorf("patching twice = %q, %v; want the same bytes", again, err)
			}
			lines, ok, err := Block(got)
			if err != nil || !ok || !slices.Equal(lines, pi5Block) {
				t.Errorf("Block = %q, %v, %v; want %q", lines, ok, err, pi5Block)
			}
			other, err := Patch(got, []string{"[all]", "usb_max_current_enable=1", "[all]"})
			if err != nil || strings.Contains(string(other), "pciex1") || !bytes.HasPrefix(other, []byte(kept)) {
				t.Errorf("a new block on a patched file = %q, %v; want the old block replaced", other, err)
			}
			removed, err := Patch(got, nil)
			if err != nil || string(removed) != kept {
				t.Errorf("no lines on a patched file = %q, %v; want the base %q", removed, err, kept)
			}
			if _, ok, _ := Block([]byte(tt.base)); ok {
				t.Error("Block found a block in the base")
			}
		})
	}
}

// TestPatchRefuses a config.txt whose block is broken, and a
// line that could break one.
func TestPatchRefuses(t *testing.T) {
	stock := testimage.Trixie().ConfigTxt()
	patched, err := Patch([]byte(stock), pi5Block)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, cfg string
		lines     []string
		err       string
	}{
		{name: "begin without end", cfg: strings.Replace(string(patched), configEnd+"\n", "", 1), err: "has no end"},
		{name: "end without begin", cfg: stock + configEnd + "\n", err: "ends at line 55 without its beginning"},
		{name: "two blocks", cfg: string(patched) + string(patched[len(stock):]), err: "a second pibake block begins at line 64"},
		{name: "a line with a newline", cfg: stock, lines: []string{"[all]\nkernel=x"}, err: "not one line of its own"},
		{name: "a marker as a line", cfg: stock, lines: []string{configEnd}, err: "not one line of its own"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lines := tt.lines
			if lines == nil {
				lines = pi5Block
			}
			got, err := Patch([]byte(tt.cfg), lines)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Patch = %q, %v; want an error with %q", got, err, tt.err)
			}
		})
	}
}
