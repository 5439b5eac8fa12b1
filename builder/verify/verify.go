// Package verify is `pibake verify`: it checks a build directory, an image
// or a card against what the build recorded — SHA256SUMS, the signatures
// of SHA256SUMS and provenance.json, each image's bytes against delta.json
// (the base everywhere pibake did not write), each node's SBOM against the
// image's packages and boot files, and the provenance's subjects against
// the files — and reports every check by name, naming the files, byte
// ranges and partitions that differ.
package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/pibake/pibake/builder/sign"
)

// Files of a build directory that verify reads (phase 2's build writes
// them; SHA256SUMS lists every one but itself and the signatures).
const (
	SumsFile       = "SHA256SUMS"
	ProvenanceFile = "provenance.json"
)

// Options configure a verification.
type Options struct {
	// AllowedSigners is an allowed_signers file (ssh-keygen(1)): when
	// set, SHA256SUMS and provenance.json must carry a good signature of
	// one of its keys. When empty, signatures are not checked (and the
	// report says so).
	AllowedSigners string
	// Base is the raw base image (pibake's cache has it): with it, a
	// changed range is narrowed to the exact bytes.
	Base string
	// Dir is the build directory of an image or card (default: the
	// image's own directory).
	Dir string
	// Node is the node an image or card holds (default: the hostname in
	// its boot partition's pibake/node.json).
	Node string
}

// Status of a check.
const (
	StatusOK      = "ok"
	StatusFailed  = "failed"
	StatusSkipped = "skipped"
)

// Check is one named check and what it found.
type Check struct {
	Name     string   `json:"name"`
	Status   string   `json:"status"`
	Detail   string   `json:"detail,omitempty"`
	Problems []string `json:"problems,omitempty"`
}

// Report is every check of one target.
type Report struct {
	Target string  `json:"target"`
	Checks []Check `json:"checks"`
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == StatusFailed {
			return true
		}
	}
	return false
}

// Find returns the check with this name, or nil.
func (r *Report) Find(name string) *Check {
	for i := range r.Checks {
		if r.Checks[i].Name == name {
			return &r.Checks[i]
		}
	}
	return nil
}

func (r *Report) add(name string, problems []string, detail string) {
	c := Check{Name: name, Status: StatusOK, Detail: detail, Problems: problems}
	if len(problems) > 0 {
		c.Status = StatusFailed
	}
	r.Checks = append(r.Checks, c)
}

func (r *Report) skip(name, why string) {
	r.Checks = append(r.Checks, Check{Name: name, Status: StatusSkipped, Detail: why})
}

// WriteText writes the report for people: one line per check, its
// problems indented below it, and a last line with the verdict.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%-7s %s", strings.ToUpper(c.Status), c.Name)
		if c.Detail != "" {
			fmt.Fprintf(&b, ": %s", c.Detail)
		}
		b.WriteByte('\n')
		for _, p := range c.Problems {
			fmt.Fprintf(&b, "        %s\n", p)
		}
	}
	verdict := "verified"
	if r.Failed() {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "%s: %s\n", r.Target, verdict)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Path verifies a build directory, or an image file or device.
func Path(ctx context.Context, target string, opt Options) (*Report, error) {
	fi, err := os.Stat(target)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return Dir(ctx, target, opt)
	}
	return Image(ctx, target, opt)
}

// allowed reads the allowed signers, or nil when none were given.
func (o Options) allowed() ([]sign.AllowedSigner, error) {
	if o.AllowedSigners == "" {
		return nil, nil
	}
	b, err := os.ReadFile(o.AllowedSigners)
	if err != nil {
		return nil, err
	}
	a, err := sign.ParseAllowedSigners(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.AllowedSigners, err)
	}
	return a, nil
}

// checkSignatures checks SHA256SUMS.sig and provenance.json.sig.
func checkSignatures(r *Report, dir string, allowed []sign.AllowedSigner) {
	for _, name := range []string{SumsFile, ProvenanceFile} {
		check := "signature " + name + sign.SigSuffix
		if allowed == nil {
			r.skip(check, "no --allowed-signers given")
			continue
		}
		principals, err := sign.VerifyFile(filepath.Join(dir, name), allowed)
		if err != nil {
			r.add(check, []string{err.Error()}, "")
			continue
		}
		r.add(check, nil, "signed by "+strings.Join(principals, ", "))
	}
}
