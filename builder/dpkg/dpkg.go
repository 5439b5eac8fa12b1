// Package dpkg reads the list of installed Debian packages from dpkg's
// database (/var/lib/dpkg/status) of an image's root file system, read
// only, for the per-node SBOM.
//
// The rules are dpkg's own (lib/dpkg/parse.c, lib/dpkg/pkg-format.c of
// dpkg 1.21; deb822 as in Debian Policy §5.1): one paragraph per package
// and architecture, separated by blank lines; field names are
// case-insensitive; a line starting with a space or tab continues the
// field before it; a package counts as installed when the third word of
// its Status field is "installed" (whatever the want flag: "hold ok
// installed" is installed, "deinstall ok config-files" is not). Its
// source package is the Source field's first word, or the package itself;
// the source version is the version in parentheses after it, or the
// package's own version — which is what `dpkg-query -f
// '${source:Package} ${source:Version}'` prints, and what the tests
// compare with.
package dpkg

import (
	"bufio"
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// StatusPath is where dpkg keeps its database on a root file system.
const StatusPath = "var/lib/dpkg/status"

// Package is one installed binary package.
type Package struct {
	Name         string `json:"name"`
	Version      string `json:"version"`
	Architecture string `json:"architecture"`
	// Source and SourceVersion are the source package it was built from
	// (equal to Name and Version when the status file gives no Source).
	Source        string `json:"source"`
	SourceVersion string `json:"source_version"`
}

// RootReader reads a file from a root file system by its path without a
// leading slash, and says whether one is there; *diskimg.Image is one.
type RootReader interface {
	ReadRootFile(name string) ([]byte, error)
	RootFileExists(name string) (bool, error)
}

// Read reads the installed packages of the root file system of im.
func Read(im RootReader) ([]Package, error) {
	// go-diskfs says a missing file's directory "could not be read":
	// look first, to say what is missing.
	if found, err := im.RootFileExists(StatusPath); err == nil && !found {
		return nil, fmt.Errorf("dpkg database: the root file system has no /%s, which every Raspberry Pi OS image has (the build's SBOM lists its packages); is this a Raspberry Pi OS image?", StatusPath)
	}
	b, err := im.ReadRootFile(StatusPath)
	if err != nil {
		return nil, fmt.Errorf("dpkg database: %w", err)
	}
	pkgs, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("dpkg database /%s: %w", StatusPath, err)
	}
	return pkgs, nil
}

// Parse parses a dpkg status file and returns its installed packages,
// sorted by name, then architecture. A paragraph without a Package,
// Version or Architecture field, or two paragraphs for the same package
// and architecture, is an error naming its line: the database is damaged,
// and an SBOM that silently drops a package is worse than none.
func Parse(status []byte) ([]Package, error) {
	var pkgs []Package
	seen := map[string]int{}
	err := paragraphs(status, func(line int, f fields) error {
		if !installed(f["status"]) {
			return nil
		}
		p := Package{Name: f["package"], Version: f["version"], Architecture: f["architecture"]}
		for _, req := range []struct{ name, value string }{{"Package", p.Name}, {"Version", p.Version}, {"Architecture", p.Architecture}} {
			if req.value == "" {
				return fmt.Errorf("line %d: installed package %q has no %s field", line, p.Name, req.name)
			}
		}
		p.Source, p.SourceVersion = source(f["source"], p.Name, p.Version)
		key := p.Name + ":" + p.Architecture
		if prev, ok := seen[key]; ok {
			return fmt.Errorf("line %d: package %s is listed twice (first at line %d)", line, key, prev)
		}
		seen[key] = line
		pkgs = append(pkgs, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(pkgs, func(i, j int) bool {
		if pkgs[i].Name != pkgs[j].Name {
			return pkgs[i].Name < pkgs[j].Name
		}
		return pkgs[i].Architecture < pkgs[j].Architecture
	})
	return pkgs, nil
}

// installed reports whether a Status field ("want eflag status") says the
// package is installed.
func installed(status string) bool {
	w := strings.Fields(status)
	return len(w) == 3 && w[2] == "installed"
}

// source splits a Source field, "name" or "name (version)", falling back
// to the binary package's name and version as dpkg-query does.
func source(field, name, version string) (string, string) {
	field = strings.TrimSpace(field)
	if field == "" {
		return name, version
	}
	src, rest, ok := strings.Cut(field, " ")
	rest = strings.TrimSpace(rest)
	if !ok || !strings.HasPrefix(rest, "(") || !strings.HasSuffix(rest, ")") {
		return src, version
	}
	v := strings.TrimSpace(rest[1 : len(rest)-1])
	if v == "" {
		return src, version
	}
	return src, v
}

// fields are one paragraph's fields by lower-cased name; continuation
// lines are kept after a newline, as dpkg keeps them.
type fields map[string]string

// paragraphs calls f for each paragraph of a deb822 file with the line it
// starts on. Lines of only spaces and tabs separate paragraphs too (Policy
// §5.1 lets parsers accept them, and dpkg does).
func paragraphs(data []byte, f func(line int, p fields) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20) // long Conffiles/Description fields
	var cur fields
	var last string
	start, n := 0, 0
	flush := func() error {
		if cur == nil {
			return nil
		}
		p := cur
		cur, last = nil, ""
		return f(start, p)
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimLeft(line, " \t") == "" {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last == "" {
				return fmt.Errorf("line %d: continuation line before any field", n)
			}
			cur[last] += "\n" + line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return fmt.Errorf("line %d: %q is not a field (Name: value)", n, line)
		}
		if cur == nil {
			cur, start = fields{}, n
		}
		last = strings.ToLower(name)
		cur[last] = strings.TrimSpace(value)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("line %d: %w", n+1, err)
	}
	return flush()
}
