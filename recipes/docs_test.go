package recipes

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// The docs quote recipes in ```hcl blocks whose info string says what each
// is, and every one is checked here, so that the docs cannot drift from
// what pibake reads:
//
//	```hcl          a whole recipe: it loads without an error
//	```hcl fragment part of one: it loads with a founding server added
//	```hcl lock     a lock file: it loads as one (its elided sums "…" filled in)
//	```hcl schema   the schema: every block and attribute pibake reads, and nothing else
//
// The example recipes the docs link (recipes/examples/*.hcl) are loaded by
// TestExamples.

// docBlock is one fenced hcl block of a Markdown file.
type docBlock struct {
	file, kind, src string
	line            int
}

var fence = regexp.MustCompile("^```(\\S*)\\s*(.*)$")

// docHCLBlocks reads every ```hcl block of README.md and docs/*.md.
func docHCLBlocks(t *testing.T) []docBlock {
	t.Helper()
	files, err := filepath.Glob("../docs/*.md")
	if err != nil || len(files) == 0 {
		t.Fatalf("../docs/*.md: %v, %v", files, err)
	}
	var blocks []docBlock
	for _, file := range append([]string{"../README.md"}, files...) {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var cur *docBlock
		for i, l := range strings.Split(string(text), "\n") {
			m := fence.FindStringSubmatch(l)
			switch {
			case m != nil && cur == nil:
				cur = &docBlock{file: file, kind: strings.TrimSpace(m[2]), line: i + 1}
				if m[1] != "hcl" {
					cur.kind = "-" // another language: skipped
				}
			case m != nil:
				if cur.kind != "-" {
					blocks = append(blocks, *cur)
				}
				cur = nil
			case cur != nil:
				cur.src += l + "\n"
			}
		}
	}
	return blocks
}

// docServer completes a fragment into a recipe that can be loaded.
const docServer = "\nnode \"docs-founding-server\" {\n  role = \"server\"\n  ip   = \"192.168.1.10/24\"\n}\n"

// TestDocRecipes loads every hcl block of the docs as what its info
// string says it is.
func TestDocRecipes(t *testing.T) {
	t.Setenv("K3S_TOKEN", exampleToken)
	t.Setenv("K3S_AGENT_TOKEN", exampleAgentToken)
	kinds := map[string]int{}
	for _, b := range docHCLBlocks(t) {
		where := filepath.Base(b.file) + ":" + strconv.Itoa(b.line)
		kinds[b.kind]++
		switch b.kind {
		case "", "fragment":
			src := b.src
			if b.kind == "fragment" {
				src += docServer
			}
			if _, diags := loadSource(t, src, nil); diags.HasErrors() {
				t.Errorf("%s: the %q recipe does not load: %v", where, b.kind, diags)
			}
		case "lock":
			dir := t.TempDir()
			path := filepath.Join(dir, "lab.hcl.lock")
			src := strings.ReplaceAll(b.src, `"…"`, `"`+strings.Repeat("0", 64)+`"`)
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, diags := LoadLock(hclparse.NewParser(), path); diags.HasErrors() {
				t.Errorf("%s: the lock file does not load: %v", where, diags)
			}
		case "schema":
			checkDocSchema(t, where, b.src)
		default:
			t.Errorf("%s: hcl block of unknown kind %q; want none, fragment, lock or schema", where, b.kind)
		}
	}
	if kinds["schema"] != 1 || kinds["fragment"] == 0 || kinds["lock"] == 0 {
		t.Errorf("hcl blocks by kind: %v; want the schema once, and a fragment and a lock file", kinds)
	}
}

// checkDocSchema compares the names the documented schema uses with the
// gohcl tags of the decoder: every one the decoder reads must be shown
// (defaults aside, which takes a node's), and none it does not read.
func checkDocSchema(t *testing.T, where, src string) {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(src), "schema.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%s: the schema is not HCL: %v", where, diags)
	}
	documented := map[string]bool{}
	docNames("", f.Body.(*hclsyntax.Body), documented)
	known := map[string]bool{}
	top := map[string]reflect.Type{
		"image": reflect.TypeFor[imageSpec](), "cluster": reflect.TypeFor[clusterSpec](),
		"defaults": reflect.TypeFor[nodeSpec](), "node": reflect.TypeFor[nodeSpec](), "output": reflect.TypeFor[outputSpec](),
	}
	for name, typ := range top {
		known[name] = true
		specNames(name+".", typ, known)
	}
	if len(top) != reflect.TypeFor[fileSpec]().NumField() {
		t.Errorf("fileSpec has %d blocks; the schema check knows %d", reflect.TypeFor[fileSpec]().NumField(), len(top))
	}
	var missing, unknown []string
	for name := range known {
		if !documented[name] && !strings.HasPrefix(name, "defaults.") {
			missing = append(missing, name)
		}
	}
	for name := range documented {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	sort.Strings(missing)
	sort.Strings(unknown)
	if len(missing) > 0 {
		t.Errorf("%s: the documented schema lacks %v", where, missing)
	}
	if len(unknown) > 0 {
		t.Errorf("%s: the documented schema shows %v, which pibake does not read", where, unknown)
	}
}

// docNames collects the dotted names of a body's attributes and blocks.
func docNames(prefix string, body *hclsyntax.Body, into map[string]bool) {
	for name := range body.Attributes {
		into[prefix+name] = true
	}
	for _, b := range body.Blocks {
		into[prefix+b.Type] = true
		docNames(prefix+b.Type+".", b.Body, into)
	}
}

// specNames collects the dotted names a gohcl-tagged struct decodes.
func specNames(prefix string, typ reflect.Type, into map[string]bool) {
	for i := range typ.NumField() {
		name, kind, _ := strings.Cut(typ.Field(i).Tag.Get("hcl"), ",")
		if name == "" || slices.Contains([]string{"label", "label_range", "remain", "def_range", "attr_range"}, kind) {
			continue
		}
		into[prefix+name] = true
		if kind == "block" {
			elem := typ.Field(i).Type
			for elem.Kind() == reflect.Pointer || elem.Kind() == reflect.Slice {
				elem = elem.Elem()
			}
			specNames(prefix+name+".", elem, into)
		}
	}
}
