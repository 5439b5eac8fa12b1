// Package inputs gathers what a node's image is made from, for build,
// flash and init alike: the base image and what is known about it, the
// cluster's identity as the output directory keeps it (token, CA, node
// password generations, report key), and the recipe's node. From them it
// derives each node's inputs hash (whose first 16 hex digits are its
// build id) and its first-boot payload: one code path, so that a flashed
// card holds byte for byte what build writes to the node's image.
package inputs

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/identity"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/progress"
	"github.com/pibake/pibake/recipes"
)

// Options are the choices of a run that the recipe does not make.
type Options struct {
	// OutDir is the output directory (default: the recipe's output.dir,
	// else ./out).
	OutDir string
	// Jobs is how many nodes (and xz blocks) are worked on at once
	// (default: number of CPUs).
	Jobs int
	// Base says where the cache is and how to download.
	Base base.Options
	// Image overrides the recipe's image source (its sha256 pin is then
	// not used).
	Image string
	// Compress also makes <host>.img.xz (the recipe's output.compress
	// turns it on too).
	Compress bool
	// NewCluster makes a new cluster identity on purpose.
	NewCluster bool
	// RotateNodePassword gives these nodes their next node password.
	RotateNodePassword []string
	// Version is pibake's version, part of every node's inputs.
	Version string
	// Logf receives progress lines.
	Logf func(format string, args ...any)
	// Progress, when set, is told how far long work has come.
	Progress progress.Func
	// Check, when set, runs under the output directory's lock once the
	// directory is found to hold this cluster's images, before any
	// secret is read or made: a shard refuses to make secrets there.
	Check func(d *outdir.Dir) error
}

// Session is one run's inputs: the options resolved against the recipe,
// the base once fetched and the identity once settled.
type Session struct {
	R     *recipes.Recipe
	Opt   Options
	Nodes []*recipes.Node
	// OutDir is the output directory, defaults applied.
	OutDir   string
	Compress bool
	Logf     func(string, ...any)

	// Base is set by FetchBase.
	Base *Base

	// The identity, set by SettleIdentity.
	Token string
	// TokenSource is outdir.TokenFromRecipe or outdir.TokenGenerated.
	TokenSource string
	// CA is the cluster CA with cluster.ca = "generate", else nil.
	CA *identity.CA
	// PasswordGens are the nodes' password generations (0 when absent).
	PasswordGens map[string]int
	// ReportKey is the out directory's report key when a node reports.
	ReportKey []byte
}

// Prepare resolves the options against the recipe for the given nodes.
func Prepare(r *recipes.Recipe, opt Options, nodes []*recipes.Node) (*Session, error) {
	if opt.Jobs < 0 {
		return nil, fmt.Errorf("jobs is %d; it must be at least 1", opt.Jobs)
	}
	if opt.Jobs == 0 {
		opt.Jobs = runtime.NumCPU()
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	out := OutDir(r, opt.OutDir)
	if err := checkOutDir(out); err != nil {
		return nil, err
	}
	return &Session{R: r, Opt: opt, Nodes: nodes, OutDir: out, Compress: opt.Compress || r.Output.Compress, Logf: opt.Logf}, nil
}

// checkOutDir refuses an output directory that cannot be one because it,
// or the nearest of its parents that exists, is not a directory: said
// before the base image is fetched and hashed, not after.
func checkOutDir(dir string) error {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("output directory %s: %s is a file, not a directory; give --out a directory (made if missing)", dir, p)
		case err == nil, filepath.Dir(p) == p:
			return nil // a directory (opening the output directory names any other problem)
		}
	}
}

// OutDir is where a run writes: the flag's directory, else the recipe's
// output.dir, else ./out.
func OutDir(r *recipes.Recipe, flag string) string {
	switch {
	case flag != "":
		return flag
	case r.Output.Dir != "":
		return r.Output.Dir
	}
	return "out"
}

// reports says whether a node of r reports its first boot.
func reports(r *recipes.Recipe) bool {
	for _, n := range r.Nodes {
		if n.ReportURL != "" {
			return true
		}
	}
	return false
}
