package safetext

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClean(t *testing.T) {
	tests := []struct {
		name, in string
		width    int
		want     string
	}{
		{name: "plain", in: "the API answers", width: 40, want: "the API answers"},
		{name: "title and clear", in: "\x1b]0;owned\a\x1b[2J", width: 40, want: `\x1b]0;owned\a\x1b[2J`},
		{name: "C1 CSI", in: "a\u009b2Jb", width: 40, want: `a\u009b2Jb`},
		{name: "DEL and NUL", in: "a\x7fb\x00c", width: 40, want: `a\x7fb\x00c`},
		{name: "invalid UTF-8", in: "a\xff\xc3(b", width: 40, want: `a\xff\xc3(b`},
		{name: "bidi override", in: "abc\u202edef", width: 40, want: `abc\u202edef`},
		{name: "line separator", in: "a\u2028b", width: 40, want: `a\u2028b`},
		{name: "backslash doubled", in: `C:\x1b`, width: 40, want: `C:\\x1b`},
		{name: "quotes kept", in: `say "hi" 'there'`, width: 40, want: `say "hi" 'there'`},
		{name: "newline and tab", in: "a\nb\tc", width: 40, want: `a\nb\tc`},
		{name: "unicode kept", in: "ünïcødé ✓ 🥧", width: 40, want: "ünïcødé ✓ 🥧"},
		{name: "exactly the width", in: "abcdefghij", width: 10, want: "abcdefghij"},
		{name: "cut", in: "abcdefghijk", width: 10, want: "abcdefg..."},
		{name: "cut never splits an escape", in: "abcdef\x1bxyz", width: 10, want: "abcdef..."},
		{name: "an escape that fits at the end", in: "abcd\x1b", width: 10, want: `abcd\x1b`},
		{name: "tiny width", in: "abcdef", width: 0, want: "..."},
		{name: "empty", in: "", width: 10, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Clean(tt.in, tt.width); got != tt.want {
				t.Errorf("Clean(%q, %d) = %q; want %q", tt.in, tt.width, got, tt.want)
			}
		})
	}
}

// FuzzClean: whatever a node sends, Clean's output is valid UTF-8 of
// printable characters only (no C0, DEL, C1, format characters), no
// wider than asked, and, when not cut, Go's own string-literal parser
// reads it back as exactly the input; a cut output is the start of the
// whole one.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b]0;owned\a\x1b[2J", "\u009b2J", "\xff\xfe", "a\\b", `"q"`, "\u202e", strings.Repeat("é", 80)} {
		f.Add(s, 40)
	}
	f.Fuzz(func(t *testing.T, s string, width int) {
		width = (width%300+300)%300 + 1
		got := Clean(s, width)
		if !utf8.ValidString(got) || FirstUnsafe(got) >= 0 || strings.ContainsAny(got, "\n\t") {
			t.Fatalf("Clean(%q, %d) = %q: not plain printable text", s, width, got)
		}
		if n := utf8.RuneCountInString(got); n > max(width, len(Cut)) {
			t.Fatalf("Clean(%q, %d) = %q: %d runes", s, width, got, n)
		}
		whole := Clean(s, 10*len(s)+10) // an escape is at most 10 runes a byte
		if got != whole {
			if !strings.HasSuffix(got, Cut) || !strings.HasPrefix(whole, strings.TrimSuffix(got, Cut)) {
				t.Fatalf("Clean(%q, %d) = %q; not a cut of %q", s, width, got, whole)
			}
			return
		}
		back, err := strconv.Unquote(`"` + strings.ReplaceAll(got, `"`, `\"`) + `"`)
		if err != nil || back != s {
			t.Errorf("Clean(%q) = %q, which reads back as %q (%v)", s, got, back, err)
		}
	})
}

func TestFirstUnsafe(t *testing.T) {
	for s, want := range map[string]int{"plain\ttext\n": -1, `back\slash`: -1, "a\x1b": 1, "ab\u009b": 2, "\xff": 0, "a\x7f": 1, "x\u202e": 1} {
		if got := FirstUnsafe(s); got != want {
			t.Errorf("FirstUnsafe(%q) = %d; want %d", s, got, want)
		}
	}
}
