package verify

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/pibake/pibake/builder/delta"
	"github.com/pibake/pibake/builder/provenance"
	"github.com/pibake/pibake/builder/sbom"
)

// records are a build directory's records, each nil when absent or
// unreadable (the check that needs it says why).
type records struct {
	dir     string
	sums    map[string]string // file name to SHA-256, from SHA256SUMS
	sumsErr error
	delta   *delta.Record
	prov    *provenance.Statement
	// actual are the sums verify computed, by file name.
	actual map[string]string
}

func loadRecords(dir string) *records {
	rec := &records{dir: dir, actual: map[string]string{}}
	rec.sums, rec.sumsErr = readSums(filepath.Join(dir, SumsFile))
	if b, err := os.ReadFile(filepath.Join(dir, delta.File)); err == nil {
		rec.delta, _ = delta.Parse(b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, ProvenanceFile)); err == nil {
		rec.prov, _ = provenance.Parse(b)
	}
	return rec
}

var sumsLine = regexp.MustCompile(`^([0-9a-f]{64}) [ *](.+)$`)

// readSums parses a SHA256SUMS file as sha256sum writes it.
func readSums(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		m := sumsLine.FindStringSubmatch(sc.Text())
		if m == nil {
			return nil, fmt.Errorf("%s line %d: not a sha256sum line (%q)", SumsFile, n, sc.Text())
		}
		if _, dup := sums[m[2]]; dup || strings.Contains(m[2], "/") {
			return nil, fmt.Errorf("%s line %d: %s is listed twice or is not in the directory", SumsFile, n, m[2])
		}
		sums[m[2]] = m[1]
	}
	return sums, sc.Err()
}

func fileSHA256(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// outputFile reports whether a file name is one a build writes and
// SHA256SUMS must list.
func outputFile(name string) bool {
	for _, suffix := range []string{".img", ".img.xz", ".img.bmap", sbom.FileSuffix} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return name == delta.File || name == ProvenanceFile
}

// checkSums checks every file SHA256SUMS lists (the images by the sums
// their checks computed), and that every output file in the directory is
// listed.
func (rec *records) checkSums(ctx context.Context, r *Report) {
	if rec.sumsErr != nil {
		r.add(SumsFile, []string{rec.sumsErr.Error()}, "")
		return
	}
	var problems []string
	names := sortedKeys(rec.sums)
	for _, name := range names {
		got, ok := rec.actual[name]
		if !ok {
			var err error
			if got, err = fileSHA256(ctx, filepath.Join(rec.dir, name)); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			rec.actual[name] = got
		}
		if got != rec.sums[name] {
			problems = append(problems, fmt.Sprintf("%s: SHA-256 is %s, %s says %s", name, got, SumsFile, rec.sums[name]))
		}
	}
	entries, _ := os.ReadDir(rec.dir)
	for _, e := range entries {
		if _, listed := rec.sums[e.Name()]; !listed && e.Type().IsRegular() && outputFile(e.Name()) {
			problems = append(problems, fmt.Sprintf("%s is not listed in %s", e.Name(), SumsFile))
		}
	}
	r.add(SumsFile, problems, fmt.Sprintf("%d files", len(rec.sums)))
}

// checkRecordSums checks, for an image or card, the records of its node
// against SHA256SUMS (which the signature covers): delta.json, its SBOM,
// provenance.json, and the image's own listed sum.
func (rec *records) checkRecordSums(ctx context.Context, r *Report, n *delta.Node) {
	if rec.sumsErr != nil {
		r.add(SumsFile, []string{rec.sumsErr.Error()}, "")
		return
	}
	var problems []string
	for _, name := range []string{delta.File, sbom.FileName(n.Hostname), ProvenanceFile} {
		got, err := fileSHA256(ctx, filepath.Join(rec.dir, name))
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", name, err))
		case rec.sums[name] == "":
			problems = append(problems, name+" is not listed")
		case got != rec.sums[name]:
			problems = append(problems, fmt.Sprintf("%s: SHA-256 is %s, %s says %s", name, got, SumsFile, rec.sums[name]))
		}
	}
	if rec.sums[n.File] != n.SHA256 {
		problems = append(problems, fmt.Sprintf("it lists %s with SHA-256 %q; %s records %s", n.File, rec.sums[n.File], delta.File, n.SHA256))
	}
	r.add(SumsFile, problems, "the node's records")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkProvenance checks that the provenance's subjects are the files
// SHA256SUMS lists, with the sums verify found.
func (rec *records) checkProvenance(r *Report, baseSHA256 string) {
	const name = "provenance " + ProvenanceFile
	if rec.prov == nil {
		r.add(name, []string{"missing or not an in-toto Statement v1 with SLSA provenance v1"}, "")
		return
	}
	var problems []string
	subjects := rec.prov.Subjects()
	for _, file := range sortedKeys(rec.sums) {
		if file == ProvenanceFile {
			continue
		}
		want, ok := subjects[file]
		switch {
		case !ok:
			problems = append(problems, file+" is in "+SumsFile+" but not a subject")
		case rec.actual[file] != "" && want != rec.actual[file]:
			problems = append(problems, fmt.Sprintf("subject %s has SHA-256 %s; the file has %s", file, want, rec.actual[file]))
		}
	}
	for _, file := range sortedKeys(subjects) {
		if _, ok := rec.sums[file]; !ok {
			problems = append(problems, "subject "+file+" is not in "+SumsFile)
		}
	}
	if baseSHA256 != "" && rec.prov.BaseSHA256() != baseSHA256 {
		problems = append(problems, fmt.Sprintf("base image %s; the SBOMs say %s", rec.prov.BaseSHA256(), baseSHA256))
	}
	r.add(name, problems, fmt.Sprintf("%d subjects", len(subjects)))
}
