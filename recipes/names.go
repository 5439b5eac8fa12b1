// Package recipes decodes and validates pibake recipe files.
//
// A recipe is one HCL file (or a directory of *.hcl files) that describes a
// k3s cluster of Raspberry Pis. Load turns it into a Recipe: plain Go values,
// every node fully resolved (defaults merged, count expanded, join address
// chosen), with no HCL left for later stages to evaluate.
//
// This package is internal to pibake and not a stable API.
package recipes

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/pibake/pibake/recipes/lockfile"
	"github.com/pibake/pibake/recipes/model"
	"github.com/pibake/pibake/recipes/plan"
	"github.com/pibake/pibake/recipes/redact"
)

// The recipe's parts live in packages of their own under recipes/ (the
// model, lock files, plans, redaction…); these names keep recipes.X
// working for the rest of pibake, which needs to know only this package.

// The resolved recipe (recipes/model).
type (
	Role       = model.Role
	Secret     = model.Secret
	Recipe     = model.Recipe
	Image      = model.Image
	Cluster    = model.Cluster
	CAMode     = model.CAMode
	Airgap     = model.Airgap
	Output     = model.Output
	Node       = model.Node
	Storage    = model.Storage
	User       = model.User
	Apt        = model.Apt
	WiFi       = model.WiFi
	Firstboot  = model.Firstboot
	Method     = model.Method
	Hardware   = model.Hardware
	Bootloader = model.Bootloader
	Model      = model.Model
	BootDevice = model.BootDevice
)

// The model's values.
const (
	RoleServer         = model.RoleServer
	RoleAgent          = model.RoleAgent
	DefaultImageSource = model.DefaultImageSource
	CANone             = model.CANone
	CAGenerate         = model.CAGenerate
	StorageUnknown     = model.StorageUnknown
	StorageSSD         = model.StorageSSD
	StorageSD          = model.StorageSD
	DefaultUserName    = model.DefaultUserName
	MethodAuto         = model.MethodAuto
	MethodSystemdRun   = model.MethodSystemdRun
	MethodCloudInit    = model.MethodCloudInit
	ModelUnknown       = model.ModelUnknown
	ModelAny           = model.ModelAny
	ModelPi4           = model.ModelPi4
	ModelPi400         = model.ModelPi400
	ModelCM4           = model.ModelCM4
	ModelPi5           = model.ModelPi5
	ModelPi500         = model.ModelPi500
	ModelPi500Plus     = model.ModelPi500Plus
	ModelCM5           = model.ModelCM5
	BootUnknown        = model.BootUnknown
	BootSD             = model.BootSD
	BootUSB            = model.BootUSB
	BootNVMe           = model.BootNVMe
)

// The model's lists, and ApplyLock's error.
var (
	CAModes      = model.CAModes
	Storages     = model.Storages
	Methods      = model.Methods
	Models       = model.Models
	BootDevices  = model.BootDevices
	ErrStaleLock = model.ErrStaleLock
)

// Plural formats a count with its noun: "1 node", "3 nodes".
func Plural(n int, noun string) string { return model.Plural(n, noun) }

// Lock files (recipes/lockfile).
type (
	Lock      = lockfile.Lock
	LockImage = lockfile.LockImage
	LockK3s   = lockfile.LockK3s
)

// LockPath is where a recipe's lock file lives (model.LockPath).
func LockPath(r *Recipe) string { return model.LockPath(r) }

// LoadLock reads a lock file; a missing one is nil without diagnostics.
func LoadLock(p *hclparse.Parser, path string) (*Lock, hcl.Diagnostics) {
	return lockfile.LoadLock(p, path)
}

// Plans (recipes/plan).
type (
	Plan        = plan.Plan
	PlanCluster = plan.PlanCluster
	PlanNode    = plan.PlanNode
	PlanSummary = plan.PlanSummary
)

// NewPlan is what `pibake plan` shows of r, every secret redacted.
func NewPlan(r *Recipe) Plan { return plan.NewPlan(r) }

// RedactedFiles is redact.RedactedFiles: copies of the parsed recipe files
// with every literal secret overwritten, for diagnostics' snippets.
func RedactedFiles(files map[string]*hcl.File) map[string]*hcl.File {
	return redact.RedactedFiles(files)
}
