// Package pibake_test holds the tests about the repository as a whole: its
// documentation (links, recipe examples) and its shape (package sizes,
// function lengths, the import direction docs/architecture.md gives).
package pibake_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// docFiles are README.md and every page in docs/.
func docFiles(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("docs/*.md")
	if err != nil || len(pages) < 10 {
		t.Fatalf("docs/*.md: %v, %v; want the docs pages", pages, err)
	}
	return append([]string{"README.md"}, pages...)
}

// mdLine is a line of Markdown outside code fences, with inline code
// spans blanked (a link shown as code is not a link).
type mdLine struct {
	n    int
	text string
}

var inlineCode = regexp.MustCompile("`[^`]*`")

// prose returns a Markdown file's lines outside fenced code blocks.
func prose(text string) []mdLine {
	var out []mdLine
	fence := false
	for i, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fence = !fence
			continue
		}
		if !fence {
			out = append(out, mdLine{n: i + 1, text: l})
		}
	}
	return out
}

var heading = regexp.MustCompile(`^(#{1,6})\s+(.*)$`)

// anchors are the fragment ids GitHub gives a file's headings: lower
// case, everything but letters, digits, spaces, hyphens and underscores
// dropped, spaces made hyphens, and -1, -2 … added to repeats.
func anchors(text string) map[string]bool {
	ids := map[string]bool{}
	seen := map[string]int{}
	for _, l := range prose(text) {
		m := heading.FindStringSubmatch(l.text)
		if m == nil {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(m[2]) {
			switch {
			case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		id := b.String()
		if k := seen[id]; k > 0 {
			ids[fmt.Sprintf("%s-%d", id, k)] = true
		} else {
			ids[id] = true
		}
		seen[id]++
	}
	return ids
}

var link = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocLinks checks that every relative link in README.md and docs/*.md
// names a file that exists and, with a #fragment, a heading in it.
func TestDocLinks(t *testing.T) {
	checked := 0
	for _, file := range docFiles(t) {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range prose(string(text)) {
			for _, m := range link.FindAllStringSubmatch(inlineCode.ReplaceAllString(l.text, ""), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				path, frag, _ := strings.Cut(target, "#")
				dest := file
				if path != "" {
					dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
				}
				fi, err := os.Stat(dest)
				if err != nil {
					t.Errorf("%s:%d: link %s: %v", file, l.n, target, err)
					continue
				}
				if frag == "" {
					continue
				}
				if fi.IsDir() || !strings.HasSuffix(dest, ".md") {
					t.Errorf("%s:%d: link %s: a #fragment needs a Markdown file", file, l.n, target)
					continue
				}
				body, err := os.ReadFile(dest)
				if err != nil {
					t.Fatal(err)
				}
				if !anchors(string(body))[frag] {
					t.Errorf("%s:%d: link %s: %s has no heading #%s", file, l.n, target, dest, frag)
				}
			}
		}
	}
	if checked < 20 {
		t.Errorf("checked %d relative links; the docs link each other more than that: is the link pattern broken?", checked)
	}
}

// TestAnchors pins the heading-to-fragment rule the link check uses.
func TestAnchors(t *testing.T) {
	text := "# Images: what pibake reads and writes\n## `build` flags\n```\n# not a heading\n```\n## Notes\n## Notes\n"
	got := anchors(text)
	for _, want := range []string{"images-what-pibake-reads-and-writes", "build-flags", "notes", "notes-1"} {
		if !got[want] {
			t.Errorf("anchors(...) lacks %q; got %v", want, got)
		}
	}
	if got["not-a-heading"] {
		t.Error("a # line inside a code fence was taken for a heading")
	}
}
