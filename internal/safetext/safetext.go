// Package safetext makes text that a node, or a stranger on the network,
// sent fit to show: on a terminal, where control characters and escape
// sequences act (retitle the window, clear the screen, rewrite what the
// operator reads), and on a page. Clean escapes every byte and rune that
// is not printable, so what reaches the screen is inert text, and cuts
// the result to a fixed width, so no one can fill the screen.
//
// This package is internal to pibake and not a stable API.
package safetext

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Cut marks text that Clean shortened.
const Cut = "..."

// Clean returns s with every character that is not printable escaped, as
// Go writes them in a string literal: C0 controls (ESC, BEL, newline…),
// DEL, C1 controls (U+0080–U+009F: a terminal may read U+009B as CSI),
// format characters such as the bidirectional overrides, line and
// paragraph separators, and bytes that are not UTF-8 (\xNN). A backslash
// is doubled, so an escape in the output always means an escaped
// character. Quotes are left alone. The result is at most width runes;
// a cut ends in Cut and never splits an escape. A width below len(Cut)
// is taken as len(Cut).
//
// What is not cut reads back with strconv.Unquote (after escaping its
// double quotes) as exactly s.
func Clean(s string, width int) string {
	width = max(width, len(Cut))
	var b strings.Builder
	runes := 0
	for i := 0; i < len(s); {
		tok, size := token(s[i:])
		n := utf8.RuneCountInString(tok)
		// The rest fits whole, or this token fits and leaves room for
		// the mark.
		if runes+n > width-len(Cut) && !fitsWhole(s[i:], width-runes) {
			b.WriteString(Cut)
			return b.String()
		}
		b.WriteString(tok)
		runes += n
		i += size
	}
	return b.String()
}

// fitsWhole reports whether the rest of the text, escaped, takes at most
// room runes.
func fitsWhole(rest string, room int) bool {
	n := 0
	for i := 0; i < len(rest); {
		tok, size := token(rest[i:])
		n += utf8.RuneCountInString(tok)
		if n > room {
			return false
		}
		i += size
	}
	return true
}

// token is the first character of s as shown, and how many bytes of s it
// takes.
func token(s string) (string, int) {
	r, size := utf8.DecodeRuneInString(s)
	switch {
	case r == utf8.RuneError && size <= 1:
		return `\x` + hex2(s[0]), 1
	case r == '\\':
		return `\\`, 1
	case r == ' ' || r == '"' || r == '\'':
		return s[:1], 1
	case r < ' ' || r == 0x7f:
		if e := named(r); e != "" {
			return e, 1
		}
		return `\x` + hex2(byte(r)), 1
	case strconv.IsPrint(r):
		return s[:size], size
	case r <= 0xffff:
		return `\u` + pad(strconv.FormatUint(uint64(r), 16), 4), size
	}
	return `\U` + pad(strconv.FormatUint(uint64(r), 16), 8), size
}

// named is the short escape of an ASCII control character, if it has one.
func named(r rune) string {
	switch r {
	case '\a':
		return `\a`
	case '\b':
		return `\b`
	case '\f':
		return `\f`
	case '\n':
		return `\n`
	case '\r':
		return `\r`
	case '\t':
		return `\t`
	case '\v':
		return `\v`
	}
	return ""
}

func hex2(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}

func pad(s string, n int) string {
	return strings.Repeat("0", n-len(s)) + s
}

// FirstUnsafe is the byte offset of the first character in s that Clean
// would escape (other than a backslash), or -1 when there is none: a
// check that text is fit to show, for tests of what reaches a screen.
// Newline and tab are allowed, since the displays lay out with them.
func FirstUnsafe(s string) int {
	for i := 0; i < len(s); {
		tok, size := token(s[i:])
		if tok != s[i:i+size] && s[i] != '\\' && s[i] != '\n' && s[i] != '\t' {
			return i
		}
		i += size
	}
	return -1
}
