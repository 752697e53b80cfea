package scripts_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// make test skips the long tests (tflitetest.Long) and cannot build the
// !race ones; make test-long runs the tests its LONG_TESTS pattern
// matches. A long test the pattern misses would run nowhere: this fails
// naming it.
func TestLongTestsRunInTestLong(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^LONG_TESTS := (.+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("Makefile has no LONG_TESTS")
	}
	// Make writes $$ for the regexp's $.
	pattern, err := regexp.Compile(strings.ReplaceAll(string(m[1]), "$$", "$"))
	if err != nil {
		t.Fatalf("LONG_TESTS is not a regexp: %v", err)
	}
	long := longTests(t)
	if len(long) == 0 {
		t.Fatal("found no long tests: the scan is broken")
	}
	for name, where := range long {
		if !pattern.MatchString(name) {
			t.Errorf("%s (%s) is long but LONG_TESTS does not match it: make test-long would not run it", name, where)
		}
	}
}

// longTests are the Test functions that call tflitetest.Long, or live in a
// file built only without -race, by name, with their file.
func longTests(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != ".." && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		noRace := false
		for _, c := range f.Comments {
			for _, l := range c.List {
				if strings.HasPrefix(l.Text, "//go:build") && strings.Contains(l.Text, "!race") {
					noRace = true
				}
			}
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "Test") || fn.Body == nil {
				continue
			}
			if noRace || callsLong(fn.Body) {
				out[fn.Name.Name] = path
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func callsLong(body *ast.BlockStmt) bool {
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "Long" {
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == "tflitetest" {
				found = true
			}
		}
		return !found
	})
	return found
}
