package main

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
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
		{"--baseline", "--spawn", "1", "--rate", "100"},
		{"--baseline", "--spawn", "2"},
		{"--baseline", "--spawn", "2", "--rate", "100", "--rounds", "0"},
		{"--baseline", "--spawn", "2", "--rate", "100", "--pin"},
		{"--baseline", "--spawn", "2", "--rate", "100", "--scenario", "kill"},
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
	code, out, errOut := runBenchCmd(t, "--spawn", "1", "--binary", bin, "--idle", "0", "--requests", "3000", "--batch", "10",
		"--keys", "20", "--concurrency", "8", "--policy-spec", spec, "--progress", "none", "--json", js, "--duration", "30s",
		"--warmup", "300ms")
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	r := readResultFile(t, js)
	if r.Errors != 0 || r.Checks != 3000 || r.Calls != 300 {
		t.Errorf("checks %d calls %d errors %d %v", r.Checks, r.Calls, r.Errors, r.ErrorKinds)
	}
	// The warm-up ran on keys of its own: the measured run's accuracy below
	// is still exact.
	if w := r.Warmup; w == nil || w.Checks == 0 || !strings.Contains(out, "after a warm-up of 0.30s") {
		t.Errorf("warm-up %+v, summary:\n%s", w, out)
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

// TestBenchSpawnCluster loads one hot key through three joined ratelimitd
// processes with the owner-aware routing (exactly its limit allowed; each
// node's CPU reported, its idle CPU measured first), then rolls a two-node cluster
// under load and checks the events, the errors and that nothing is left
// running.
func TestBenchSpawnCluster(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	hot := filepath.Join(dir, "hot.json")
	spec := `{"name":"bench","limit":500,"window_ms":3600000}`
	code, out, errOut := runBenchCmd(t, "--spawn", "3", "--binary", bin, "--idle", "1s", "--owner-aware", "--dist", "hot", "--requests", "3000",
		"--concurrency", "16", "--policy-spec", spec, "--progress", "none", "--json", hot, "--duration", "60s")
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	r := readResultFile(t, hot)
	if r.Allowed != 500 || r.Errors != 0 || r.Accuracy.OverAdmitted != 0 || r.Accuracy.UnderAdmitted != 0 || len(r.Params.URLs) != 3 {
		t.Errorf("hot key through 3 nodes: allowed %d errors %v accuracy %+v urls %v", r.Allowed, r.ErrorKinds, r.Accuracy, r.Params.URLs)
	}
	if c := r.CPU; c == nil || len(c.Nodes) != 3 || c.IdleWindow.D() < time.Second || c.PerDecisionUS <= 0 || !strings.Contains(out, "node CPU") {
		t.Errorf("CPU report %+v, summary:\n%s", c, out)
	}

	rolled := filepath.Join(dir, "rolled.json")
	code, out, errOut = runBenchCmd(t, "--spawn", "2", "--binary", bin, "--idle", "0", "--scenario", "rolling-restart", "--rate", "500",
		"--keys", "50", "--duration", "12s", "--policy-spec", spec, "--progress", "none", "--json", rolled)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	r = readResultFile(t, rolled)
	var kinds []string
	for _, e := range r.Events {
		kinds = append(kinds, e.Kind+" "+e.Node)
	}
	if got := strings.Join(kinds, ", "); got != "stop bench-node-0, ready bench-node-0, stop bench-node-1, ready bench-node-1" {
		t.Errorf("events: %s", got)
	}
	if r.Errors != 0 {
		t.Errorf("a rolling restart that drains each node first had errors: %v", r.ErrorKinds)
	}
	nodesStopped(t, r.Params.URLs)
}

// TestBenchURLsAdminToken: against a node with an admin token, bench reads
// its policy with --admin-token (or RATELIMIT_ADMIN_TOKEN); without it, the
// summary says the node wants its token rather than blaming the policy.
func TestBenchURLsAdminToken(t *testing.T) {
	url, _ := serveInProcess(t, nil, "--standalone", "--admin-token", "bench-secret")
	args := []string{"--urls", url, "--requests", "20", "--concurrency", "2", "--progress", "none", "--policy", "auth", "--duration", "20s"}
	code, _, errOut := runBenchCmd(t, args...)
	if code != 0 || !strings.Contains(errOut, "wants its admin token (--admin-token or RATELIMIT_ADMIN_TOKEN)") || strings.Contains(errOut, "no policy") {
		t.Errorf("without the token: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runBenchCmd(t, append(args, "--admin-token", "bench-secret")...)
	if code != 0 || strings.Contains(errOut, "accuracy not accounted") {
		t.Errorf("with the token: exit %d, stderr %q", code, errOut)
	}
}

// TestShellJoin: the command line a report records reads back, through a
// POSIX shell, as the arguments it was made of (JSON, spaces, quotes).
func TestShellJoin(t *testing.T) {
	args := []string{"ratelimitd", "bench", "--policy-spec", `{"name":"bench","limit":100,"window_ms":3600000}`,
		"--key-prefix", "it's a key", "--urls", "http://127.0.0.1:8080", "", `$HOME;rm -rf /`, "a\nb"}
	line := shellJoin(args)
	got, err := exec.Command("sh", "-c", `set -- `+line+`; for a in "$@"; do printf '%s\0' "$a"; done`).Output()
	if err != nil {
		t.Fatalf("sh reading %s: %v", line, err)
	}
	if want := strings.Join(args, "\x00") + "\x00"; string(got) != want {
		t.Errorf("%s reads back as %q, want %q", line, got, want)
	}
}

// The flood scenario: fresh keys far past --max-keys while used-up keys
// are probed; every probe is denied, and the report gives the store's
// counters, its evictions and the memory.
func TestBenchFloodScenario(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flood.json")
	code, out, errOut := runBenchCmd(t, "--scenario", "flood", "--keys", "40000", "--max-keys", "4096",
		"--duration", "1500ms", "--concurrency", "8", "--progress", "none", "--json", path)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	for _, want := range []string{"scenario flood", "used-up keys: all denied", "evictions during the run", "flood memory RSS"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	f := readResultFile(t, path).Flood
	switch {
	case f == nil:
		t.Fatal("no flood report in the result")
	case f.Probes < 100 || f.ProbesAllowed != 0:
		t.Errorf("%d probes, %d allowed; want at least a round of 100, none allowed", f.Probes, f.ProbesAllowed)
	case f.Evictions["counting"] <= 0 || f.Evictions["denying"] != 0:
		t.Errorf("evictions %v; want counting ones, no denying one", f.Evictions)
	case f.Counters["counters"] > 4096 || f.Counters["counters"] < 2048 || f.MaxKeys["counters"] != 4096:
		t.Errorf("counters %v of %v; want the store full, within --max-keys", f.Counters, f.MaxKeys)
	case f.RSSAfter <= 0 || f.HeapAfter <= 0:
		t.Errorf("memory not read: %+v", f)
	}
}

// TestBenchBaseline spawns two joined nodes and a standalone one, and
// alternates two rounds: the pair at --rate (owner-aware, which the
// standalone node, publishing no ring, does without), the single node at
// half of it. The report gives both CPU figures of each round, their ratio and
// the median, in the text, the JSON and the HTML; every node is gone
// afterwards.
func TestBenchBaseline(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	js, page := filepath.Join(dir, "b.json"), filepath.Join(dir, "b.html")
	spec := `{"name":"bench","limit":1000000000,"window_ms":3600000}`
	start := time.Now()
	code, out, errOut := runBenchCmd(t, "--spawn", "2", "--binary", bin, "--baseline", "--owner-aware", "--rounds", "2", "--rate", "600", "--duration", "2s",
		"--idle", "0", "--keys", "500", "--concurrency", "8", "--policy-spec", spec, "--progress", "none", "--json", js, "--html", page)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	t.Logf("took %v", time.Since(start))
	r := readResultFile(t, js)
	b := r.Baseline
	if b == nil || len(b.Rounds) != 2 || b.Nodes != 2 || b.Rate != 600 {
		t.Fatalf("baseline %+v, summary:\n%s", b, out)
	}
	var ratios []float64
	for i, rd := range b.Rounds {
		if rd.ClusterUS <= 0 || rd.NodeUS <= 0 || rd.ClusterErrors != 0 || rd.NodeErrors != 0 {
			t.Errorf("round %d: %+v", i+1, rd)
			continue
		}
		if want := rd.ClusterUS / rd.NodeUS; rd.Ratio != want {
			t.Errorf("round %d: ratio %v, want %v / %v = %v", i+1, rd.Ratio, rd.ClusterUS, rd.NodeUS, want)
		}
		// Half the rate on one node: about as many decisions a second as
		// the pair gives each of its nodes.
		if rd.NodeDecisionsPerSec < 0.3*rd.ClusterDecisionsPerSec || rd.NodeDecisionsPerSec > 0.7*rd.ClusterDecisionsPerSec {
			t.Errorf("round %d: 1 node at %.0f decisions/s, the pair at %.0f", i+1, rd.NodeDecisionsPerSec, rd.ClusterDecisionsPerSec)
		}
		ratios = append(ratios, rd.Ratio)
	}
	if want := bench.Median(ratios); len(ratios) == 2 && b.MedianRatio != want {
		t.Errorf("median ratio %v, want %v", b.MedianRatio, want)
	}
	// The rest of the result is the pair's last round.
	if r.CPU == nil || len(r.CPU.Nodes) != 2 || r.CPU.PerDecisionUS != b.Rounds[1].ClusterUS || len(r.Params.URLs) != 2 {
		t.Errorf("the result is not the cluster's last round: cpu %+v urls %v", r.CPU, r.Params.URLs)
	}
	for _, want := range []string{"baseline     2 node(s) at 600 checks/s against 1 node at 1/2 of the checks/s they got (at most 300)", "round 2 ", "ratio        "} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if !b.Fill || !strings.Contains(out, "the 2 node(s) carried the rest of the load") {
		t.Errorf("the cluster did not carry the rest of the load while the node ran (fill %v):\n%s", b.Fill, out)
	}
	if html, err := os.ReadFile(page); err != nil || !bytes.Contains(html, []byte(`id="baseline"`)) {
		t.Errorf("html report has no baseline table: %v", err)
	}
	nodesStopped(t, r.Params.URLs)
}

// nodesStopped fails t for each of the spawned nodes' urls that still
// accepts connections after the bench.
func nodesStopped(t *testing.T, urls []string) {
	t.Helper()
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := net.DialTimeout("tcp", pu.Host, time.Second); err == nil {
			c.Close()
			t.Errorf("a spawned node still listens on %s after the bench", pu.Host)
		}
	}
}
