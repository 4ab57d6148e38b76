package archtest

import (
	"go/ast"
	"go/token"
	"testing"
)

// TestNodeWorkUnderItsLifetime: the cluster package's background work
// (hand-off, counter copies, refunds of copies, fold-back, joins, the
// contexts of members) runs under the node's lifetime context, which
// Close ends, never under a context.Background() of its own that would
// outlive the node. Only Start makes root contexts: the lifetime itself,
// and the one a crash switch halts the node with.
func TestNodeWorkUnderItsLifetime(t *testing.T) {
	fset := token.NewFileSet()
	for _, file := range clusterFiles(t, fset) {
		for _, d := range file.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil || (fn.Recv == nil && fn.Name.Name == "Start") {
				continue // package-level values are made once, not per node
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
					if x, ok := sel.X.(*ast.Ident); ok && x.Name == "context" && (sel.Sel.Name == "Background" || sel.Sel.Name == "TODO") {
						t.Errorf("%s: %s calls context.%s: background work runs under the node's lifetime (n.life)", fset.Position(call.Pos()), fn.Name.Name, sel.Sel.Name)
					}
				}
				return true
			})
		}
	}
}
