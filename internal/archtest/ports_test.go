package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// listenCalls are the functions whose address argument binds a port.
var listenCalls = map[string]bool{
	"net.Listen": true, "net.ListenPacket": true, "tls.Listen": true,
	"http.ListenAndServe": true, "http.ListenAndServeTLS": true,
}

// listenFlags are ratelimitd's flags that bind a port.
var listenFlags = []string{"--http-addr", "--gossip-addr", "--peer-addr", "--raft-addr"}

// listenFields are cluster.Config's fields that bind a port.
var listenFields = map[string]bool{"GossipAddr": true, "PeerAddr": true, "RaftAddr": true}

// TestNoFixedPorts: no test binds a fixed port, where `make run`, a
// deployed node or another test binary may already listen. It reads every
// _test.go file of the module for literal addresses with a port other than
// 0 given to a listen call, a listen flag of ratelimitd, or a listen field
// of cluster.Config. (The helpers that start ratelimitd put the listen
// addresses a test leaves unset on port 0.)
func TestNoFixedPorts(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	var files int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && path != root) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		files++
		for _, bad := range fixedListens(f) {
			t.Errorf("%s: a fixed port (%s): bind port 0 and read the port bound", fset.Position(bad.Pos()), bad.Value)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 20 {
		t.Fatalf("read %d test files; the walk from %s missed the module", files, root)
	}
}

// fixedListens returns the literal addresses with a fixed port that f
// listens on.
func fixedListens(f *ast.File) []*ast.BasicLit {
	var out []*ast.BasicLit
	check := func(e ast.Expr) {
		if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING && fixedPort(lit.Value) {
			out = append(out, lit)
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok {
				if x, ok := sel.X.(*ast.Ident); ok && listenCalls[x.Name+"."+sel.Sel.Name] {
					for _, a := range n.Args {
						check(a)
					}
				}
			}
			flagValues(n.Args, check)
		case *ast.CompositeLit:
			flagValues(n.Elts, check)
			if !isClusterConfig(n.Type) {
				return true
			}
			for _, e := range n.Elts {
				if kv, ok := e.(*ast.KeyValueExpr); ok {
					if k, ok := kv.Key.(*ast.Ident); ok && listenFields[k.Name] {
						check(kv.Value)
					}
				}
			}
		}
		return true
	})
	return out
}

// isClusterConfig reports whether t names cluster.Config.
func isClusterConfig(t ast.Expr) bool {
	sel, ok := t.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	return ok && x.Name == "cluster" && sel.Sel.Name == "Config"
}

// flagValues calls check on the value after each listen flag in list, and
// on each "--flag=value".
func flagValues(list []ast.Expr, check func(ast.Expr)) {
	for i, e := range list {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			continue
		}
		s, _ := strconv.Unquote(lit.Value)
		for _, f := range listenFlags {
			switch {
			case s == f && i+1 < len(list):
				check(list[i+1])
			case strings.HasPrefix(s, f+"="):
				if fixedPort(strconv.Quote(strings.TrimPrefix(s, f+"="))) {
					check(lit)
				}
			}
		}
	}
}

// fixedPort reports whether the quoted literal q is host:port of this
// machine (loopback, every interface, or no host) with a port other than 0.
func fixedPort(q string) bool {
	s, err := strconv.Unquote(q)
	if err != nil {
		return false
	}
	if i := strings.Index(s, "="); i >= 0 && strings.HasPrefix(s, "--") {
		s = s[i+1:]
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "0" || port == "" {
		return false
	}
	ip := net.ParseIP(host)
	return host == "" || host == "localhost" || ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}
