package recipes

import (
	"bytes"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/pibake/pibake/recipes/cluster"

	"github.com/pibake/pibake/recipes/diag"
	"github.com/pibake/pibake/recipes/hclfuncs"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
)

// maxCount bounds count so that a typo (count = 100000) fails fast instead
// of expanding into a recipe no cluster could hold: Kubernetes supports at
// most 5000 nodes.
const maxCount = 5000

// maxRecipeBytes bounds what is parsed: HCL's parser allocates about 250
// bytes per byte of source (measured: 2 GB for 8 MB), so a runaway file
// is refused before it is read into an AST.
const maxRecipeBytes = 4 << 20

// Load parses, decodes and validates the recipe at path: one .hcl file, or
// a directory whose *.hcl files together form one recipe. The parser is
// passed in so the caller can render diagnostics with source snippets from
// p.Files() (use RedactedFiles to keep secrets out of them).
//
// The returned diagnostics may hold warnings even when the recipe is
// valid; the Recipe is nil exactly when they hold an error.
func Load(p *hclparse.Parser, path string) (*Recipe, hcl.Diagnostics) {
	names, dir, diags := recipeFiles(path)
	if diags.HasErrors() {
		return nil, diags
	}
	srcs := make([]source, 0, len(names))
	for _, name := range names {
		b, err := readAtMost(name, maxRecipeBytes+1)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Cannot read recipe",
				Detail:   fmt.Sprintf("Reading %s failed: %s.", name, diag.DescribeOSError(err)),
			})
			continue
		}
		srcs = append(srcs, source{name: name, src: b})
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return load(p, path, dir, srcs)
}

type source struct {
	name string
	src  []byte
}

// notText refuses a file that is not UTF-8 text (an image given as the
// recipe, say) with one finding, instead of the parser's hundreds.
func notText(s source) *hcl.Diagnostic {
	bad := bytes.IndexByte(s.src, 0)
	if bad < 0 && !utf8.Valid(s.src) {
		for i := 0; i < len(s.src); {
			r, n := utf8.DecodeRune(s.src[i:])
			if r == utf8.RuneError && n <= 1 {
				bad = i
				break
			}
			i += n
		}
	}
	if bad < 0 {
		return nil
	}
	line := 1 + bytes.Count(s.src[:bad], []byte("\n"))
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Not a text file",
		Detail:   fmt.Sprintf("%s is not a recipe: byte %d (line %d) is not UTF-8 text. A recipe is an HCL text file (.hcl), such as recipes/examples/lab.hcl.", s.name, bad, line),
		Subject:  &hcl.Range{Filename: s.name, Start: hcl.Pos{Line: line, Column: 1, Byte: bad}, End: hcl.Pos{Line: line, Column: 1, Byte: bad}},
	}
}

// recipeFiles lists the files that make up the recipe at path and the
// directory relative paths are resolved against.
func recipeFiles(path string) ([]string, string, hcl.Diagnostics) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, "", hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read recipe",
			Detail:   fmt.Sprintf("Reading %s failed: %s. Give the path of a .hcl recipe file or of a directory of them.", path, diag.DescribeOSError(err)),
		}}
	}
	if !fi.IsDir() {
		return []string{path}, filepath.Dir(path), nil
	}
	names, err := filepath.Glob(filepath.Join(path, "*.hcl"))
	if err == nil && len(names) == 0 {
		err = fmt.Errorf("no *.hcl files in it")
	}
	if err != nil {
		return nil, "", hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read recipe",
			Detail:   fmt.Sprintf("Reading directory %s failed: %s.", path, err),
		}}
	}
	sort.Strings(names)
	return names, path, nil
}

// readAtMost reads up to limit bytes of the file at name: a recipe over
// the cap is refused by load without the rest being read (an image given
// as a recipe by mistake, or a pipe that never ends).
func readAtMost(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// load is Load on sources already in memory (the fuzz target's way in).
func load(p *hclparse.Parser, path, dir string, srcs []source) (*Recipe, hcl.Diagnostics) {
	files, diags := parse(p, srcs)
	if diags.HasErrors() {
		return nil, diags
	}
	var spec fileSpec
	diags = append(diags, gohcl.DecodeBody(hcl.MergeFiles(files), nil, &spec)...)
	if diags.HasErrors() {
		return nil, diags
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		absDir = dir
	}
	ld := &loader{
		dir:   absDir,
		ctx:   &hcl.EvalContext{Functions: hclfuncs.Functions(absDir)},
		start: hcl.Range{Filename: srcs[0].name, Start: hcl.InitialPos, End: hcl.InitialPos},
	}
	r := &Recipe{Path: path, Dir: absDir}
	for _, s := range srcs {
		r.Files = append(r.Files, s.name)
	}
	diags = append(diags, ld.image(spec.Image, &r.Image)...)
	diags = append(diags, ld.cluster(spec.Cluster, stem(path), &r.Cluster)...)
	diags = append(diags, ld.output(spec.Output, &r.Output)...)
	nodes, d := ld.nodes(spec.Defaults, spec.Nodes, &r.Cluster)
	diags = append(diags, d...)
	r.Nodes = nodes
	if !diags.HasErrors() {
		// Everything wrong across nodes, in one pass: validate also runs
		// when the cluster could not be fully resolved.
		w := cluster.Where{Start: ld.start, ClusterRanges: ld.clusterRanges, ClusterRange: ld.clusterRange, Meta: ld.meta}
		diags = append(diags, w.Resolve(r)...)
		diags = append(diags, w.Validate(r)...)
	}
	diags = dedupe(diags)
	if diags.HasErrors() {
		return nil, diags
	}
	return r, diags
}

// parse parses the recipe's files, refusing what is not text and what
// brings the recipe over maxRecipeBytes.
func parse(p *hclparse.Parser, srcs []source) ([]*hcl.File, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	var files []*hcl.File
	total := 0
	for _, s := range srcs {
		if d := notText(s); d != nil {
			diags = append(diags, d)
			continue
		}
		if total += len(s.src); total > maxRecipeBytes {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Recipe too large",
				Detail: fmt.Sprintf("%s brings the recipe over %d MiB, the most pibake reads. Even the largest cluster, %d nodes each in a node block of its own, takes a few MiB; use count for fleets, or split them into clusters of their own.",
					s.name, maxRecipeBytes>>20, maxCount),
				Subject: &hcl.Range{Filename: s.name, Start: hcl.Pos{Line: 1, Column: 1}, End: hcl.Pos{Line: 1, Column: 1}},
			})
			break
		}
		f, d := p.ParseHCL(s.src, s.name)
		// After a syntax error the parser's later findings in the same file
		// mostly follow from it (one unterminated string gives several):
		// the first one is what to fix.
		if d.HasErrors() {
			for _, e := range d {
				if e.Severity == hcl.DiagError {
					d = hcl.Diagnostics{e}
					break
				}
			}
		}
		diags = append(diags, d...)
		if f != nil {
			files = append(files, f)
		}
	}
	return files, diags
}

// stem is the default cluster name: the recipe file name without .hcl, or
// the directory's name.
func stem(path string) string {
	base := filepath.Base(filepath.Clean(path))
	return strings.TrimSuffix(base, filepath.Ext(base))
}

// loader carries what every decoding step needs.
type loader struct {
	dir string
	ctx *hcl.EvalContext
	// start is line 1 of the first file: the subject of findings that
	// belong to no particular block.
	start hcl.Range

	clusterRanges diag.Ranges
	clusterRange  hcl.Range
	// meta runs parallel to Recipe.Nodes.
	meta []diag.NodeMeta
}

func (ld *loader) image(b *rawBlock, img *Image) hcl.Diagnostics {
	var spec imageSpec
	ranges := diag.Ranges{}
	fallback := ld.start
	var diags hcl.Diagnostics
	if b != nil {
		diags = gohcl.DecodeBody(b.Body, ld.ctx, &spec)
		ranges.Collect(b.Body, "")
		fallback = b.DefRange
	}
	if diags.HasErrors() {
		return diags
	}
	return append(diags, resolveImage(spec, ranges, fallback, ld.dir, img)...)
}

func (ld *loader) output(b *rawBlock, out *Output) hcl.Diagnostics {
	if b == nil {
		return nil
	}
	var spec outputSpec
	diags := gohcl.DecodeBody(b.Body, ld.ctx, &spec)
	if diags.HasErrors() {
		return diags
	}
	out.Compress = spec.Compress
	if spec.Dir != "" {
		dir, err := hclfuncs.ResolvePath(ld.dir, spec.Dir)
		if err != nil {
			ranges := diag.Ranges{}
			ranges.Collect(b.Body, "")
			return append(diags, diag.ErrorAt(ranges.At("dir", b.DefRange), "Invalid output directory", "%s.", err))
		}
		out.Dir = dir
	}
	return diags
}

func (ld *loader) cluster(b *rawBlock, defaultName string, c *Cluster) hcl.Diagnostics {
	var spec clusterSpec
	ld.clusterRanges = diag.Ranges{}
	ld.clusterRange = ld.start
	var diags hcl.Diagnostics
	if b != nil {
		diags = gohcl.DecodeBody(b.Body, ld.ctx, &spec)
		ld.clusterRanges.Collect(b.Body, "")
		ld.clusterRange = b.DefRange
	}
	if diags.HasErrors() {
		return diags
	}
	return append(diags, resolveCluster(spec, ld.clusterRanges, ld.clusterRange, defaultName, ld.dir, c)...)
}

// nodes expands every node block (count), merges defaults into each
// instance and resolves it.
func (ld *loader) nodes(defaults *rawBlock, blocks []rawNode, c *Cluster) ([]Node, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	if defaults != nil {
		diags = append(diags, checkDefaultsBody(defaults)...)
	}
	var nodes []Node
	total := 0
	for _, rn := range blocks {
		count, counted, d := ld.count(rn)
		diags = append(diags, d...)
		if d.HasErrors() {
			// The rest of the block is still checked once, so that its
			// other mistakes come out in the same run.
			count, counted = 1, true
		}
		if total+count > maxCount {
			// Past k3s's limit nothing further is expanded: a recipe of a
			// hundred thousand nodes is refused in the time of five
			// thousand, not decoded whole.
			subject := rn.DefRange
			if counted {
				subject = ld.countRange(rn)
			}
			diags = append(diags, diag.ErrorAt(&subject, "Too many nodes",
				"This node block brings the recipe to at least %d nodes; Kubernetes, k3s included, supports clusters of at most %d nodes, so pibake reads no further. Split the fleet into clusters of their own, each in its own recipe.", total+count, maxCount))
			break
		}
		total += count
		for i := 0; i < count; i++ {
			ctx := ld.ctx.NewChild()
			ctx.Variables = map[string]cty.Value{
				"count": cty.ObjectVal(map[string]cty.Value{"index": cty.NumberIntVal(int64(i))}),
			}
			spec, ranges, d := decodeNode(ctx, defaults, rn)
			diags = append(diags, d...)
			if d.HasErrors() {
				continue
			}
			meta := diag.NodeMeta{Ranges: ranges, DefRange: rn.DefRange, NameRange: rn.NameRange}
			node, d := resolveNode(spec, meta, rn.Name, i, counted)
			diags = append(diags, d...)
			if d.HasErrors() || diags.HasErrors() {
				continue
			}
			nodes = append(nodes, node)
			ld.meta = append(ld.meta, meta)
		}
	}
	return nodes, diags
}

// countRange is where a node block's count is written.
func (ld *loader) countRange(rn rawNode) hcl.Range {
	content, _, _ := rn.Body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "count"}}})
	if a := content.Attributes["count"]; a != nil {
		return a.Expr.Range()
	}
	return rn.DefRange
}

// count evaluates a node block's count, which must not depend on itself.
func (ld *loader) count(rn rawNode) (int, bool, hcl.Diagnostics) {
	content, _, diags := rn.Body.PartialContent(&hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "count"}},
	})
	attr := content.Attributes["count"]
	if attr == nil || diags.HasErrors() {
		return 1, false, diags
	}
	rng := attr.Expr.Range()
	v, d := attr.Expr.Value(ld.ctx)
	diags = append(diags, d...)
	if d.HasErrors() {
		return 0, true, diags
	}
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.Number {
		return 0, true, append(diags, diag.ErrorAt(&rng, "Invalid count", "count must be a whole number of nodes, such as count = 3."))
	}
	f := v.AsBigFloat()
	if !f.IsInt() || f.Cmp(big.NewFloat(1)) < 0 || f.Cmp(big.NewFloat(maxCount)) > 0 {
		return 0, true, append(diags, diag.ErrorAt(&rng, "Invalid count", "count is %s; it must be a whole number from 1 to %d. Remove the node block instead of setting count = 0.", f.Text('f', -1), maxCount))
	}
	n, _ := f.Int64()
	return int(n), true, diags
}

// notInDefaults are node attributes that name one node and so make no
// sense in defaults.
var notInDefaults = []string{"role", "count", "hostname"}

func checkDefaultsBody(b *rawBlock) hcl.Diagnostics {
	ranges := diag.Ranges{}
	ranges.Collect(b.Body, "")
	var diags hcl.Diagnostics
	for _, name := range notInDefaults {
		if ranges.Has(name) {
			diags = append(diags, diag.ErrorAt(ranges.At(name, b.DefRange), "Attribute not allowed in defaults",
				"%q belongs to each node block, not to defaults: move it into the node blocks that need it.", name))
		}
	}
	return diags
}

// decodeNode decodes defaults and the node block in ctx and merges them:
// an attribute the node writes replaces the default, and a block the node
// writes is merged field by field into the default block.
func decodeNode(ctx *hcl.EvalContext, defaults *rawBlock, rn rawNode) (nodeSpec, diag.Ranges, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	var merged nodeSpec
	ranges := diag.Ranges{}
	if defaults != nil {
		diags = append(diags, gohcl.DecodeBody(defaults.Body, ctx, &merged)...)
		ranges.Collect(defaults.Body, "")
		for _, name := range notInDefaults {
			delete(ranges, name) // reported once by checkDefaultsBody
		}
		merged.Role, merged.Hostname, merged.Count = "", "", nil
	}
	var own nodeSpec
	diags = append(diags, gohcl.DecodeBody(rn.Body, ctx, &own)...)
	ownRanges := diag.Ranges{}
	ownRanges.Collect(rn.Body, "")
	mergeSpec(reflect.ValueOf(&merged).Elem(), reflect.ValueOf(&own).Elem(), ownRanges, "")
	for k := range ownRanges {
		// A list the node writes replaces the default's, elements too.
		for old := range ranges {
			if strings.HasPrefix(old, k+"[") {
				delete(ranges, old)
			}
		}
	}
	for k, v := range ownRanges {
		ranges[k] = v
	}
	return merged, ranges, diags
}

// mergeSpec copies into dst every attribute of src that the recipe wrote
// (per written), recursing into blocks so that they merge field by field.
func mergeSpec(dst, src reflect.Value, written diag.Ranges, prefix string) {
	t := dst.Type()
	for i := 0; i < t.NumField(); i++ {
		name, kind, _ := strings.Cut(t.Field(i).Tag.Get("hcl"), ",")
		if name == "" || !written.Has(prefix+name) {
			continue
		}
		df, sf := dst.Field(i), src.Field(i)
		if kind == "block" {
			if sf.IsNil() {
				continue
			}
			if df.IsNil() {
				df.Set(reflect.New(df.Type().Elem()))
			} else {
				// Copy, so that merging never writes through a pointer
				// shared with another node's defaults.
				cp := reflect.New(df.Type().Elem())
				cp.Elem().Set(df.Elem())
				df.Set(cp)
			}
			mergeSpec(df.Elem(), sf.Elem(), written, prefix+name+".")
			continue
		}
		df.Set(sf)
	}
}

// dedupe drops repeated findings, so that a mistake in defaults or in a
// counted node block is reported once, not once per node, and orders them
// by position in the recipe.
func dedupe(diags hcl.Diagnostics) hcl.Diagnostics {
	seen := map[string]bool{}
	var out hcl.Diagnostics
	for _, d := range diags {
		// gohcl's follow-up to a failed function call says nothing new.
		if d.Summary == "Unsuitable value type" && strings.Contains(d.Detail, "value must be known") {
			continue
		}
		key := fmt.Sprintf("%d|%s|%v", d.Severity, d.Summary, d.Subject)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, d)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Subject, out[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		default:
			return a.Start.Byte < b.Start.Byte
		}
	})
	return out
}
