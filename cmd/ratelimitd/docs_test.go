package main

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeListsEverySetting keeps the README's configuration table in
// step with the settings table.
func TestReadmeListsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var c serveConfig
	for _, s := range serveSettings(&c) {
		row := "| `--" + s.Flag + "` |"
		i := strings.Index(readme, row)
		if i < 0 {
			t.Errorf("README has no row for --%s", s.Flag)
			continue
		}
		line, _, _ := strings.Cut(readme[i:], "\n")
		for _, e := range s.Env {
			if !strings.Contains(line, "`"+e.Name+"`") {
				t.Errorf("README row of --%s lacks %s", s.Flag, e.Name)
			}
		}
		if s.Field != "" && !strings.Contains(line, "`"+s.Field+"`") {
			t.Errorf("README row of --%s lacks field %s", s.Flag, s.Field)
		}
		if s.Default != "" && s.DefaultDoc == "" && !strings.Contains(line, "`"+s.Default+"`") {
			t.Errorf("README row of --%s lacks default %s", s.Flag, s.Default)
		}
	}
}
