// Package redact hides the secrets a recipe writes literally in copies of
// its parsed files, for diagnostics that show source snippets.
package redact

import (
	"bytes"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// RedactedFiles returns copies of parsed recipe files in which every secret
// written literally (token = "…", psk = "…", password_hash = "…") is
// overwritten with '*', byte for byte, so that positions stay right. Give
// them to hcl.NewDiagnosticTextWriter: its source snippets then show where
// a problem is without printing the secret. Values from env() or file()
// are left alone, since the call itself reveals nothing.
func RedactedFiles(files map[string]*hcl.File) map[string]*hcl.File {
	out := make(map[string]*hcl.File, len(files))
	for name, f := range files {
		body, ok := f.Body.(*hclsyntax.Body)
		if !ok {
			out[name] = f
			continue
		}
		src := bytes.Clone(f.Bytes)
		maskSecrets(body, src)
		out[name] = &hcl.File{Body: f.Body, Bytes: src, Nav: f.Nav}
	}
	return out
}

func maskSecrets(body *hclsyntax.Body, src []byte) {
	for name, attr := range body.Attributes {
		if !(secretAttributes[name] || name == "url" && hasUserinfo(src, attr.Expr.Range())) || isReference(attr.Expr) {
			continue
		}
		r := attr.Expr.Range()
		for i := r.Start.Byte; i < r.End.Byte && i < len(src); i++ {
			if src[i] != '\n' && src[i] != '\r' {
				src[i] = '*'
			}
		}
	}
	for _, b := range body.Blocks {
		maskSecrets(b.Body, src)
	}
}

// isReference reports whether expr only names where a secret comes from:
// env("NAME") or file("path") with a literal argument.
func isReference(expr hclsyntax.Expression) bool {
	call, ok := expr.(*hclsyntax.FunctionCallExpr)
	if !ok || (call.Name != "env" && call.Name != "file") || len(call.Args) != 1 {
		return false
	}
	tmpl, ok := call.Args[0].(*hclsyntax.TemplateExpr)
	if !ok {
		return false
	}
	for _, p := range tmpl.Parts {
		if _, lit := p.(*hclsyntax.LiteralValueExpr); !lit {
			return false
		}
	}
	return true
}

// secretAttributes are the attribute names whose values are secrets,
// wherever they appear.
var secretAttributes = map[string]bool{
	"token":         true,
	"agent_token":   true,
	"password_hash": true,
	"psk":           true,
}

// hasUserinfo reports whether the URL written in r carries credentials
// (scheme://user:password@host): a report URL with them is refused, and
// the refusal's snippet must not show them.
func hasUserinfo(src []byte, r hcl.Range) bool {
	if r.End.Byte > len(src) {
		return false
	}
	v := src[r.Start.Byte:r.End.Byte]
	i := bytes.Index(v, []byte("://"))
	if i < 0 {
		return false
	}
	host := v[i+3:]
	if j := bytes.IndexAny(host, "/?#\""); j >= 0 {
		host = host[:j]
	}
	return bytes.Contains(host, []byte("@"))
}
