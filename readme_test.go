package allot_test

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestReadmeQuickStart checks that the README's quick start is a program
// that compiles as written: a package main whose imports are those of
// example_quickstart_test.go and whose func main has the body of
// Example_quickStart, character for character, gofmt-formatted. The example
// itself is compiled and its output checked by go test.
func TestReadmeQuickStart(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	snippet, err := goBlockAfter(string(readme), "## Quick start")
	if err != nil {
		t.Fatal(err)
	}
	if formatted, err := format.Source([]byte(snippet)); err != nil {
		t.Fatalf("README quick start does not parse: %v", err)
	} else if string(formatted) != snippet {
		t.Errorf("README quick start is not gofmt-formatted; gofmt gives:\n%s", formatted)
	}

	example, err := os.ReadFile("example_quickstart_test.go")
	if err != nil {
		t.Fatal(err)
	}
	rImports, rBody := funcBody(t, "README.md", []byte(snippet), "main")
	eImports, eBody := funcBody(t, "example_quickstart_test.go", example, "Example_quickStart")
	if got, want := strings.Join(rImports, " "), strings.Join(eImports, " "); got != want {
		t.Errorf("README quick start imports %s; the example imports %s", got, want)
	}
	if rBody != eBody {
		t.Errorf("README quick start's func main differs from Example_quickStart.\nREADME:\n%s\nexample:\n%s", rBody, eBody)
	}
}

// goBlockAfter returns the first ```go block after the line heading.
func goBlockAfter(doc, heading string) (string, error) {
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		return "", fmt.Errorf("no %q heading in README.md", heading)
	}
	doc = doc[i:]
	const open, end = "\n```go\n", "\n```\n"
	j := strings.Index(doc, open)
	if j < 0 {
		return "", fmt.Errorf("no go code block after %q", heading)
	}
	doc = doc[j+len(open):]
	k := strings.Index(doc, end)
	if k < 0 {
		return "", fmt.Errorf("unterminated code block after %q", heading)
	}
	return doc[:k+1], nil
}

// funcBody parses src and returns its import paths and the source text
// between the braces of the function called name.
func funcBody(t *testing.T, filename string, src []byte, name string) (imports []string, body string) {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filename, src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range f.Imports {
		imports = append(imports, im.Path.Value)
	}
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && fd.Name.Name == name {
			lo, hi := fset.Position(fd.Body.Lbrace).Offset+1, fset.Position(fd.Body.Rbrace).Offset
			return imports, string(bytes.TrimPrefix(src[lo:hi], []byte("\n")))
		}
	}
	t.Fatalf("%s: no func %s", filename, name)
	return nil, ""
}
