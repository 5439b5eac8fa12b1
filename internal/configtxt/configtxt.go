// Package configtxt edits a Raspberry Pi's config.txt the one way pibake
// does: one marked block of its own at the end, every other line kept.
package configtxt

import (
	"bytes"
	"fmt"
	"strings"
)

// pibake's block in config.txt: one marked block at the end, every line of
// the base kept byte for byte before it. The firmware reads config.txt
// top to bottom and a later setting wins, so the block's settings apply;
// it opens and closes with its own filters, so nothing before it changes
// what it applies to, and nothing after it is filtered by it
// (raspberrypi/documentation, config_txt/conditional.adoc: "[all]
// resets all previously set filters"). It is written inline, not as an
// include: "Include directives are not supported by bootcode.bin or the
// EEPROM bootloader" (config_txt/what_is_config_txt.adoc).
const (
	configBegin = "# pibake: begin. Written from the recipe's hardware profile; pibake rewrites this block."
	configEnd   = "# pibake: end"
)

// Patch returns config.txt with pibake's block holding lines:
// the block of an earlier edit is replaced, and with no lines there is
// none. What comes before the block is the base, unchanged (a base whose
// last line lacks its newline gets one); the block follows one blank
// line. The same lines on the same base give the same bytes, and patching
// the result again changes nothing.
func Patch(base []byte, lines []string) ([]byte, error) {
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\n") || strings.HasPrefix(l, "# pibake:") {
			return nil, fmt.Errorf("config.txt: block line %q is not one line of its own", l)
		}
	}
	start, end, err := findConfigBlock(base)
	if err != nil {
		return nil, err
	}
	var out []byte
	if start >= 0 {
		out = append(append(out, base[:start]...), base[end:]...)
	} else {
		out = append(out, base...)
	}
	if len(lines) == 0 {
		return out, nil
	}
	nl := "\n"
	if bytes.Contains(base, []byte("\r\n")) {
		nl = "\r\n" // keep the base's line ends
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, nl...)
	}
	var b strings.Builder
	b.WriteString(nl + configBegin + nl)
	for _, l := range lines {
		b.WriteString(l + nl)
	}
	b.WriteString(configEnd + nl)
	return append(out, b.String()...), nil
}

// Block returns the lines of pibake's block in config.txt, and
// whether there is one.
func Block(cfg []byte) ([]string, bool, error) {
	start, end, err := findConfigBlock(cfg)
	if err != nil || start < 0 {
		return nil, false, err
	}
	text := strings.ReplaceAll(string(cfg[start:end]), "\r\n", "\n")
	all := strings.Split(strings.TrimRight(text, "\n"), "\n")
	var lines []string
	inside := false
	for _, l := range all {
		switch {
		case l == configBegin:
			inside = true
		case l == configEnd:
			inside = false
		case inside:
			lines = append(lines, l)
		}
	}
	return lines, true, nil
}

// findConfigBlock finds pibake's block: from the blank line before its
// begin marker (which Patch writes) to the end of its end marker
// line. Both are -1 when there is none; half a block, or two, is an error.
func findConfigBlock(cfg []byte) (start, end int, err error) {
	start, end = -1, -1
	pos := 0
	for n, line := range bytes.SplitAfter(cfg, []byte("\n")) {
		text := string(bytes.TrimRight(line, "\r\n"))
		switch {
		case text == configBegin && start >= 0:
			return -1, -1, fmt.Errorf("config.txt: a second pibake block begins at line %d; restore the base image's config.txt", n+1)
		case text == configBegin:
			start = pos
			if blank := blankLineBefore(cfg, pos); blank >= 0 {
				start = blank
			}
		case text == configEnd && (start < 0 || end >= 0):
			return -1, -1, fmt.Errorf("config.txt: pibake's block ends at line %d without its beginning; restore the base image's config.txt", n+1)
		case text == configEnd:
			end = pos + len(line)
		}
		pos += len(line)
	}
	if start >= 0 && end < 0 {
		return -1, -1, fmt.Errorf("config.txt: pibake's block has no end; restore the base image's config.txt")
	}
	return start, end, nil
}

// blankLineBefore is the offset of the line before pos when it is empty,
// or -1.
func blankLineBefore(cfg []byte, pos int) int {
	for _, nl := range []string{"\n", "\r\n"} {
		if pos >= len(nl) && string(cfg[pos-len(nl):pos]) == nl && (pos == len(nl) || cfg[pos-len(nl)-1] == '\n') {
			return pos - len(nl)
		}
	}
	return -1
}
