package main

import (
	"bytes"
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/recipes"
)

// diagnosticWidth is where diagnostic details wrap.
const diagnosticWidth = 78

// writeDiagnostics renders recipe diagnostics with source snippets in
// which literal secrets are masked. Each starts with file:line:col, which
// editors and CI logs turn into links. Colour only on a terminal, and
// never with NO_COLOR set (https://no-color.org).
func writeDiagnostics(out outputs, p *hclparse.Parser, diags hcl.Diagnostics) {
	_, noColor := os.LookupEnv("NO_COLOR")
	color := out.stderrIsTerminal && !noColor
	var buf bytes.Buffer
	w := hcl.NewDiagnosticTextWriter(&buf, recipes.RedactedFiles(p.Files()), diagnosticWidth, color)
	for _, d := range diags {
		buf.Reset()
		_ = w.WriteDiagnostic(d)
		if s := d.Subject; s != nil {
			fmt.Fprintf(out.stderr, "%s:%d:%d: ", s.Filename, s.Start.Line, s.Start.Column)
		}
		out.stderr.Write(buf.Bytes())
	}
}

func countDiagnostics(diags hcl.Diagnostics) (errs, warnings int) {
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs++
		} else {
			warnings++
		}
	}
	return errs, warnings
}
