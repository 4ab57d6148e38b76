// Package archtest holds the import rules of the project's packages, so a
// change that breaks a package boundary fails the tests.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/vibewell/ratelimit"

// rules: for each package, the import path prefixes its dependencies may
// have besides the standard library.
var rules = map[string][]string{
	"bucket":              {},
	"cluster/ring":        {"github.com/buraksezer/consistent", "github.com/cespare/xxhash"},
	"transport":           {module + "/internal/logcap", module + "/internal/msgpackenc"},
	"internal/logcap":     {},
	"internal/msgpackfit": {},
	"internal/msgpackenc": {},
	"httpapi": {
		module + "/bucket", module + "/internal/logcap", module + "/internal/msgpackfit",
		"github.com/prometheus/", "github.com/beorn7/perks", "github.com/cespare/xxhash",
		"github.com/munnerz/goautoneg", "google.golang.org/protobuf", "go.yaml.in/yaml",
		"github.com/vmihailenco/", "golang.org/x/",
	},
}

func TestImportRules(t *testing.T) {
	for pkg, allowed := range rules {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", module+"/"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == module+"/"+pkg || hasAnyPrefix(dep, allowed) {
				continue
			}
			t.Errorf("%s imports %s, outside its allowed dependencies %v", pkg, dep, allowed)
		}
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
