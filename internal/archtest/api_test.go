package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// nodeAPI is the whole exported method set of cluster.Node: checks,
// refunds, the policy table, what the node knows, and its lifecycle. A
// new method is a decision, made here; test hooks live in
// cluster/export_test.go and internal/crash, not on the API.
var nodeAPI = []string{
	"Allow", "AllowBatch", "Refund", "RefundBatch",
	"Policy", "Policies", "SetPolicy", "DeletePolicy", "ForceDeletePolicy", "SetOverride", "DeleteOverride",
	"Status", "Overview", "Locate", "TopDenied", "Ready", "Name", "Addrs", "Ring", "ClusterKey",
	"Leave", "Close",
}

// TestNodeAPI: cluster.Node's exported methods, in its non-test files,
// are nodeAPI and no more.
func TestNodeAPI(t *testing.T) {
	var got []string
	for _, file := range clusterFiles(t, token.NewFileSet()) {
		for _, d := range file.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || !fn.Name.IsExported() {
				continue
			}
			if star, ok := fn.Recv.List[0].Type.(*ast.StarExpr); ok {
				if id, ok := star.X.(*ast.Ident); ok && id.Name == "Node" {
					got = append(got, fn.Name.Name)
				}
			}
		}
	}
	want := slices.Sorted(slices.Values(nodeAPI))
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("cluster.Node's exported methods:\n got %v\nwant %v", got, want)
	}
}

// clusterFiles parses the cluster package's non-test files.
func clusterFiles(t *testing.T, fset *token.FileSet) []*ast.File {
	t.Helper()
	names, err := filepath.Glob(filepath.Join("..", "..", "cluster", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}
