package recipes

import (
	"github.com/hashicorp/hcl/v2"

	"github.com/pibake/pibake/recipes/redact"
)

// The recipe's parts live in packages of their own under recipes/; these
// names keep recipes.X working for the rest of pibake.

// RedactedFiles is redact.RedactedFiles: copies of the parsed recipe files
// with every literal secret overwritten, for diagnostics' snippets.
func RedactedFiles(files map[string]*hcl.File) map[string]*hcl.File {
	return redact.RedactedFiles(files)
}
