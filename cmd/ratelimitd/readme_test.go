package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vibewell/ratelimit/cluster"
)

// embeddingSection returns the README's section on embedding.
func embeddingSection(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i := strings.Index(readme, "## Embedding it in a Go service\n")
	if i < 0 {
		t.Fatal("README has no embedding section")
	}
	section := readme[i+1:]
	if j := strings.Index(section, "\n## "); j >= 0 {
		section = section[:j]
	}
	return section
}

// TestReadmeEmbeddingCompiles builds the embedding section's program as it
// stands in the README, against this tree.
func TestReadmeEmbeddingCompiles(t *testing.T) {
	section := embeddingSection(t)
	_, code, ok := strings.Cut(section, "```go\n")
	if !ok {
		t.Fatal("the embedding section has no go block")
	}
	code, _, _ = strings.Cut(code, "```")
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte(code), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "embed"), src)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the README's program does not build: %v\n%s\n%s", err, out, code)
	}
}

// TestReadmeEmbeddingListsConfig: the embedding section names every field
// of cluster.Config.
func TestReadmeEmbeddingListsConfig(t *testing.T) {
	section := embeddingSection(t)
	typ := reflect.TypeFor[cluster.Config]()
	for i := range typ.NumField() {
		if f := typ.Field(i); f.IsExported() && !strings.Contains(section, "`"+f.Name+"`") && !strings.Contains(section, "/`"+f.Name+"`") && !strings.Contains(section, "`"+f.Name+"/") {
			t.Errorf("the README's embedding section does not name cluster.Config.%s", f.Name)
		}
	}
}
