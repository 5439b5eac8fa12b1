package outdir

import "github.com/pibake/pibake/builder/outdir/manifest"

// The manifest's types and names, as the callers of outdir know them.
type (
	Manifest = manifest.Manifest
	Node     = manifest.Node
	Base     = manifest.Base
	Flash    = manifest.Flash
	Record   = manifest.Record
)

// Token sources, node states and the flash history's bound, as in package
// manifest.
const (
	TokenFromRecipe = manifest.TokenFromRecipe
	TokenGenerated  = manifest.TokenGenerated
	StateCurrent    = manifest.StateCurrent
	StateOutdated   = manifest.StateOutdated
	StateOrphan     = manifest.StateOrphan
	MaxFlashes      = manifest.MaxFlashes
	manifestFile    = manifest.File
)

// BuildID, NodeFiles, SBOMFile and ReadManifest are package manifest's.
var (
	BuildID       = manifest.BuildID
	NodeFiles     = manifest.NodeFiles
	SBOMFile      = manifest.SBOMFile
	ReadManifest  = manifest.ReadManifest
	nodeFileNames = manifest.NodeFileNames
)
