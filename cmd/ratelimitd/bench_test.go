package main

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bench"
)

func runBenchCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"bench"}, args...), func(string) string { return "" }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func readResultFile(t *testing.T, path string) *bench.Result {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := bench.ReadResult(f)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBenchEmbeddedReportsAndCompare(t *testing.T) {
	dir := t.TempDir()
	a, b, page := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json"), filepath.Join(dir, "r.html")
	spec := `{"name":"bench","limit":7,"window_ms":3600000}`
	code, out, errOut := runBenchCmd(t, "--requests", "3000", "--keys", "30", "--concurrency", "4",
		"--policy-spec", spec, "--seed", "1", "--progress", "plain", "--json", a, "--html", page)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	for _, want := range []string{"target       embedded", "decisions/s", "over-admitted 0 hits", "under-admitted 0 checks"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	ra := readResultFile(t, a)
	if ra.Checks != 3000 || ra.Allowed != 7*30 || ra.Accuracy.Mode != bench.AccuracyRun || ra.Params.Policy != "bench" || ra.Params.Seed != 1 {
		t.Errorf("result: checks %d allowed %d accuracy %s params %+v", ra.Checks, ra.Allowed, ra.Accuracy.Mode, ra.Params)
	}
	if html, err := os.ReadFile(page); err != nil || !bytes.Contains(html, []byte(`id="chart-histogram"`)) {
		t.Errorf("html report: %v", err)
	}
	if code, out, errOut := runBenchCmd(t, "--requests", "2000", "--batch", "10", "--progress", "none", "--json", b); code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	code, out, _ = runBenchCmd(t, "compare", a, b)
	if code != 0 || !strings.Contains(out, "b/a") || !strings.Contains(out, "decisions/s") || !strings.Contains(out, "embedded b10") {
		t.Errorf("compare exit %d:\n%s", code, out)
	}
}

func TestBenchUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--target", "nope"},
		{"--dist", "nope"},
		{"--scenario", "kill"},
		{"--target", "http"},
		{"extra"},
		{"--policy-spec", "{"},
		{"compare", "only-one.json"},
	} {
		if code, _, _ := runBenchCmd(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, out, _ := runBenchCmd(t, "--help"); code != 0 || !strings.Contains(out, "--spawn") {
		t.Errorf("--help: exit %d:\n%s", code, out)
	}
}

// TestBenchSpawnHTTP spawns a real ratelimitd, loads it through the HTTP
// API in batches, checks the accuracy is exact, and that the node is gone
// afterwards.
func TestBenchSpawnHTTP(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	js := filepath.Join(dir, "r.json")
	spec := `{"name":"bench","limit":50,"window_ms":3600000}`
	code, out, errOut := runBenchCmd(t, "--spawn", "1", "--binary", bin, "--requests", "3000", "--batch", "10",
		"--keys", "20", "--concurrency", "8", "--policy-spec", spec, "--progress", "none", "--json", js, "--duration", "30s")
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	r := readResultFile(t, js)
	if r.Errors != 0 || r.Checks != 3000 || r.Calls != 300 {
		t.Errorf("checks %d calls %d errors %d %v", r.Checks, r.Calls, r.Errors, r.ErrorKinds)
	}
	a := r.Accuracy
	if a.Mode != bench.AccuracyRun || a.OverAdmitted != 0 || a.UnderAdmitted != 0 || a.AllowedHits != 50*20 {
		t.Errorf("accuracy %+v", a)
	}
	if len(r.Params.URLs) != 1 {
		t.Fatalf("urls %v", r.Params.URLs)
	}
	u, err := url.Parse(r.Params.URLs[0])
	if err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		c.Close()
		t.Errorf("the spawned node still listens on %s after the bench", u.Host)
	}
}
