// Package diag is how the recipe loader says where a finding is: the
// source range of every attribute and block a recipe wrote, and errors and
// warnings at a range. The loader's packages (recipes, recipes/hardware,
// recipes/cluster) share it so that a finding reads the same wherever it
// is made.
package diag

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// NodeMeta remembers where a resolved node's values were written.
type NodeMeta struct {
	Ranges    Ranges
	DefRange  hcl.Range
	NameRange hcl.Range
}

// Ranges maps an attribute path ("ip", "user.password_hash") to the
// range of its value, and a block path ("user") to the block's header. A
// path is present exactly when the recipe wrote it.
type Ranges map[string]hcl.Range

// Collect records the attributes and blocks written in body. Bodies that
// are not HCL native syntax record nothing; their findings point at the
// enclosing block instead.
func (sr Ranges) Collect(body hcl.Body, prefix string) {
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return
	}
	for name, a := range sb.Attributes {
		sr[prefix+name] = a.Expr.Range()
		// A list written out records where each element is, so a bad
		// element is reported where it stands ("hardware.config_txt[2]").
		if list, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok {
			for i, e := range list.Exprs {
				sr[fmt.Sprintf("%s%s[%d]", prefix, name, i)] = e.Range()
			}
		}
	}
	for _, b := range sb.Blocks {
		sr[prefix+b.Type] = b.DefRange()
		sr.Collect(b.Body, prefix+b.Type+".")
	}
}

// At returns where path was written, or fallback when it was not.
func (sr Ranges) At(path string, fallback hcl.Range) *hcl.Range {
	if r, ok := sr[path]; ok {
		return &r
	}
	return &fallback
}

// Has reports whether the recipe wrote path.
func (sr Ranges) Has(path string) bool {
	_, ok := sr[path]
	return ok
}

// FirstOf returns the range of the first written path, or fallback.
func (sr Ranges) FirstOf(fallback hcl.Range, paths ...string) hcl.Range {
	for _, p := range paths {
		if r, ok := sr[p]; ok {
			return r
		}
	}
	return fallback
}

// ElemAt is where element i of a list attribute was written, or the
// attribute, or the block.
func (m NodeMeta) ElemAt(path string, i int, at func(string) *hcl.Range) *hcl.Range {
	if r, ok := m.Ranges[fmt.Sprintf("%s[%d]", path, i)]; ok {
		return &r
	}
	return at(path)
}

// HostnameRange is where the node's hostname was written, or its label.
func (m NodeMeta) HostnameRange() *hcl.Range {
	return m.Ranges.At("hostname", m.NameRange)
}

// ErrorAt is an error at subject.
func ErrorAt(subject *hcl.Range, summary, detail string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(detail, args...), Subject: subject}
}

// WarningAt is a warning at subject.
func WarningAt(subject *hcl.Range, summary, detail string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary, Detail: fmt.Sprintf(detail, args...), Subject: subject}
}

// QuoteList quotes each item and joins them with commas, for a finding
// that lists what is allowed.
func QuoteList[S ~string](list []S) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// DescribeOSError drops the path that *PathError repeats.
func DescribeOSError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
