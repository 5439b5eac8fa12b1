package pibake_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The limits docs/architecture.md sets for the code's shape.
const (
	maxFuncLines    = 60   // a function or closure, from func to its closing brace
	maxPackageLines = 1500 // a package's non-test .go files
	module          = "github.com/pibake/pibake"
)

// goPackage is a directory's non-test Go code.
type goPackage struct {
	dir     string // slash-separated, relative to the module
	lines   int
	imports map[string]bool // this module's packages it imports, relative
	funcs   []funcSize
}

type funcSize struct {
	where string // file:line:col
	name  string // file:Func, or file:Type.Method; a closure adds "(closure)"
	lines int
}

// packages parses every non-test .go file of the module (build tags
// ignored: every platform's file counts), by directory.
func packages(t *testing.T) map[string]*goPackage {
	t.Helper()
	pkgs := map[string]*goPackage{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && p != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, p, src, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(p))
		pkg := pkgs[dir]
		if pkg == nil {
			pkg = &goPackage{dir: dir, imports: map[string]bool{}}
			pkgs[dir] = pkg
		}
		if !exempt[filepath.ToSlash(p)] {
			pkg.lines += strings.Count(string(src), "\n")
		}
		for _, imp := range f.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			if rel, ok := strings.CutPrefix(ip, module+"/"); ok {
				pkg.imports[rel] = true
			}
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok {
				continue
			}
			name := filepath.ToSlash(p) + ":" + funcName(fd)
			ast.Inspect(fd, func(n ast.Node) bool {
				switch n.(type) {
				case *ast.FuncDecl, *ast.FuncLit:
					from, to := fset.Position(n.Pos()), fset.Position(n.End())
					fs := funcSize{where: from.String(), name: name, lines: to.Line - from.Line + 1}
					if _, lit := n.(*ast.FuncLit); lit {
						fs.name += "(closure)"
					}
					pkg.funcs = append(pkg.funcs, fs)
				}
				return true
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 20 {
		t.Fatalf("found %d packages; is the walk broken?", len(pkgs))
	}
	return pkgs
}

// funcName is a declared function's name: Func, or Type.Method.
func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	if star, ok := t.(*ast.StarExpr); ok {
		t = star.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fd.Name.Name
	}
	return fd.Name.Name
}

// overLimit are the places still over a limit, each at its size when it
// was listed and with why it is not fixed here. The test fails when one
// grows, and when one is back within the limit (then its entry goes):
// the list can only shrink.
var overLimit = map[string]struct {
	lines int
	why   string
}{}

// exempt are files left out of their package's size, for the reason
// given: they leave the package in work of their own.
var exempt = map[string]bool{}

// TestShapeLimits: no function or closure over maxFuncLines lines, no
// package over maxPackageLines lines of non-test code, but for the places
// overLimit lists, which may not grow.
func TestShapeLimits(t *testing.T) {
	seen, found := map[string]bool{}, map[string]bool{}
	check := func(name, what string, lines, limit int) {
		t.Helper()
		found[name] = true
		if lines <= limit {
			if ex, ok := overLimit[name]; ok {
				t.Errorf("%s is within the limit now (%d lines, limit %d): remove it from overLimit (%s)", name, lines, limit, ex.why)
			}
			return
		}
		seen[name] = true
		ex, ok := overLimit[name]
		switch {
		case !ok:
			t.Errorf("%s: %d lines, over the limit of %d; %s", what, lines, limit, map[bool]string{true: "split the package", false: "make it named steps"}[limit == maxPackageLines])
		case lines > ex.lines:
			t.Errorf("%s grew to %d lines (listed at %d, over the limit of %d because %s); shrink it instead", name, lines, ex.lines, limit, ex.why)
		}
	}
	for _, pkg := range packages(t) {
		check(pkg.dir, "package "+pkg.dir, pkg.lines, maxPackageLines)
		for _, f := range pkg.funcs {
			check(f.name, f.where+" ("+f.name+")", f.lines, maxFuncLines)
		}
	}
	for name, ex := range overLimit {
		if !seen[name] && !found[name] {
			t.Errorf("overLimit lists %s (%s), which is not there any more: remove or rename its entry", name, ex.why)
		}
	}
}

// archRow is a package's row of docs/architecture.md's table.
var archRow = regexp.MustCompile("^\\| `([a-z0-9/]+)` \\|[^|]*\\| (.*) \\|$")

// TestImportDirection: every package of the module is in
// docs/architecture.md's table, and imports only the packages of this
// module its row allows ("may import"; "—" for none).
func TestImportDirection(t *testing.T) {
	doc, err := os.ReadFile("docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string][]string{}
	for _, line := range strings.Split(string(doc), "\n") {
		m := archRow.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		var may []string
		for _, name := range regexp.MustCompile("`([a-z0-9/]+)`").FindAllStringSubmatch(m[2], -1) {
			may = append(may, name[1])
		}
		allowed[m[1]] = may
	}
	pkgs := packages(t)
	for dir, pkg := range pkgs {
		if dir == "." {
			continue // the module root holds only these tests
		}
		may, ok := allowed[dir]
		if !ok {
			t.Errorf("package %s is not in docs/architecture.md: add its row (what it owns, what it may import)", dir)
			continue
		}
		for imp := range pkg.imports {
			if !slices.Contains(may, imp) {
				t.Errorf("package %s imports %s, which docs/architecture.md does not allow it", dir, imp)
			}
		}
	}
	for dir := range allowed {
		if _, ok := pkgs[dir]; !ok {
			t.Errorf("docs/architecture.md lists %s, which is not a package", dir)
		}
	}
	if _, ok := allowed[path.Join("builder", "outdir")]; !ok {
		t.Error("docs/architecture.md's table was not read (no builder/outdir row)")
	}
}
