package httpapi

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports holds the layering: httpapi depends on bucket and its own
// Checker interface (and the project's capped log and bounded msgpack
// reader), never on the cluster or the transport.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/vibewell/ratelimit/") && path != "github.com/vibewell/ratelimit/bucket" &&
				path != "github.com/vibewell/ratelimit/internal/logcap" && path != "github.com/vibewell/ratelimit/internal/msgpackfit" {
				t.Errorf("%s imports %s; httpapi may import only bucket, internal/logcap and internal/msgpackfit from this module", name, path)
			}
		}
	}
}
