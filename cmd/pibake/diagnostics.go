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
	files := recipes.RedactedFiles(p.Files())
	w := hcl.NewDiagnosticTextWriter(&buf, files, diagnosticWidth, color)
	for i, d := range diags {
		if i >= maxDiagnostics {
			errs, warnings := countDiagnostics(diags[i:])
			fmt.Fprintf(out.stderr, "… and %s, %s more, not shown: fix the ones above first.\n\n", recipes.Plural(errs, "error"), recipes.Plural(warnings, "warning"))
			return
		}
		buf.Reset()
		if i >= maxSnippets {
			// Each snippet scans its file from the start: past a few,
			// one line each keeps a huge recipe's report linear.
			writeDiagnosticLine(out, d)
			continue
		}
		if s := d.Subject; s != nil {
			fmt.Fprintf(out.stderr, "%s:%d:%d: ", s.Filename, s.Start.Line, s.Start.Column)
			if files[s.Filename] == nil {
				// A file that was never parsed (not text, say) has no
				// snippet to show: say so once, not "(source code not
				// available)".
				bare := *d
				bare.Subject, bare.Context = nil, nil
				d = &bare
			}
		}
		_ = w.WriteDiagnostic(d)
		out.stderr.Write(buf.Bytes())
	}
}

// maxSnippets diagnostics are shown with their source; the rest, up to
// maxDiagnostics, as one line each.
const (
	maxSnippets    = 20
	maxDiagnostics = 200
)

// writeDiagnosticLine writes a diagnostic as one line, without its source.
func writeDiagnosticLine(out outputs, d *hcl.Diagnostic) {
	sev := "Error"
	if d.Severity == hcl.DiagWarning {
		sev = "Warning"
	}
	if s := d.Subject; s != nil {
		fmt.Fprintf(out.stderr, "%s:%d:%d: ", s.Filename, s.Start.Line, s.Start.Column)
	}
	fmt.Fprintf(out.stderr, "%s: %s; %s\n", sev, d.Summary, d.Detail)
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
