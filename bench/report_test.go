package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleResult(t *testing.T) *Result {
	t.Helper()
	res, err := Run(context.Background(), Config{
		Target: newCountingTarget(20, 0), Policy: "t", PolicySpec: hourPolicy(20),
		Keys: 50, Duration: 1200 * time.Millisecond, Rate: 3000, Concurrency: 4, Seed: 10,
		Params: Params{Target: "fake"},
	})
	if err != nil {
		t.Fatal(err)
	}
	res.Events = eventsWithRecovery([]Event{{At: Seconds(500 * time.Millisecond), Kind: "kill", Node: "bench-node-1"}}, res.ErrorTicks)
	return res
}

func TestHTMLReport(t *testing.T) {
	res := sampleResult(t)
	var buf bytes.Buffer
	if err := res.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, want := range []string{
		`id="chart-throughput"`, `id="chart-decisions"`, `id="chart-latency"`, `id="chart-histogram"`,
		`data-series="checks/s"`, `data-series="errors/s"`, `data-series="allowed"`, `data-series="denied"`, `data-series="p99 ms"`,
		`class="event"`, `kill bench-node-1`, `class="bar"`, `id="summary"`, `id="accuracy"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %s", want)
		}
	}
	// One point per second of the run on each line.
	full := 0
	for _, p := range res.Series {
		if p.Len >= 0.1 {
			full++
		}
	}
	if n := strings.Count(page, "<title>allowed at "); n != full || n < 1 {
		t.Errorf("%d allowed points for %d seconds", n, len(res.Series))
	}
	// Nothing is loaded from anywhere.
	for _, bad := range []string{"http:", "https:", "src=", "href=", "url(", "@import", "//cdn"} {
		if strings.Contains(page, bad) {
			t.Errorf("report contains %q: it must be self-contained", bad)
		}
	}
	if os.Getenv("RATELIMIT_BENCH_SCREENSHOT") != "" || chromium() != "" {
		screenshot(t, page)
	}
}

func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// screenshot renders the page with headless Chromium, offline, and checks
// a non-trivial PNG came out. It skips only when no Chromium is installed
// (scripts/test.sh installs it); a Chromium that fails fails the test.
func screenshot(t *testing.T, page string) {
	bin := chromium()
	if bin == "" {
		t.Skip("no chromium installed")
	}
	dir := t.TempDir()
	html := filepath.Join(dir, "report.html")
	png := filepath.Join(dir, "report.png")
	if err := os.WriteFile(html, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir="+filepath.Join(dir, "profile"),
		"--window-size=900,1600", "--screenshot="+png, "file://"+html)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium failed to render the report (%v): %s", err, out)
	}
	st, err := os.Stat(png)
	if err != nil || st.Size() < 10_000 {
		t.Errorf("screenshot %v %v: too small for a page with charts", st, err)
	}
}

func TestChurnScenarios(t *testing.T) {
	ctx := context.Background()
	for _, kind := range []string{ScenarioRollingRestart, ScenarioKill, ScenarioScaleOut} {
		t.Run(kind, func(t *testing.T) {
			s := spawnFake(t, ctx, 2)
			defer s.Close()
			before := s.PIDs()
			target, err := NewHTTP(HTTPConfig{URLs: s.URLs(), Conns: 4, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer target.Close(ctx)
			churn, err := NewChurn(ChurnConfig{Kind: kind, Nodes: s, Target: target, After: 200 * time.Millisecond,
				Gap: 100 * time.Millisecond, Drain: 100 * time.Millisecond, DetectAfter: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			// A restart of the fake node takes about a second on a busy
			// machine; the run outlasts two of them.
			dur := 3 * time.Second
			if kind == ScenarioRollingRestart {
				dur = 7 * time.Second
			}
			start := time.Now()
			res, err := Run(ctx, Config{Target: target, Policy: "t", Rate: 1000, Concurrency: 8, Keys: 100,
				Duration: dur, Scenario: churn, Seed: 11})
			t.Logf("%s: ran %v, events %+v", kind, time.Since(start), res.Events)
			if err != nil {
				t.Fatal(err)
			}
			kinds := make([]string, len(res.Events))
			for i, e := range res.Events {
				kinds[i] = e.Kind
			}
			got := strings.Join(kinds, ",")
			switch kind {
			case ScenarioRollingRestart:
				if got != "stop,ready,stop,ready" {
					t.Errorf("events %s", got)
				}
				after := s.PIDs()
				for i := range before {
					if after[i] == before[i] {
						t.Errorf("node %d was not restarted (pid %d)", i, after[i])
					}
				}
				if res.Errors != 0 {
					t.Errorf("%d errors in a rolling restart that drains each node first: %v", res.Errors, res.ErrorKinds)
				}
			case ScenarioKill:
				if got != "kill,removed" {
					t.Errorf("events %s", got)
				}
				// The dead node took checks until it left the rotation, then
				// the errors stopped.
				if res.Errors == 0 || res.ErrorKinds["conn_refused"] == 0 {
					t.Errorf("no connection errors after a kill: %v", res.ErrorKinds)
				}
				if e := res.Events[0]; e.ErrorsAfter == 0 || e.RecoveredAfter.D() <= 0 {
					t.Errorf("kill event %+v: errors after and recovery not measured", e)
				}
				if e := res.Events[1]; e.ErrorsAfter > res.Events[0].ErrorsAfter/2+10 {
					t.Errorf("errors went on after the node left the rotation: %+v", e)
				}
			case ScenarioScaleOut:
				if got != "add,ready" || len(target.URLs()) != 3 {
					t.Errorf("events %s, urls %v", got, target.URLs())
				}
			}
		})
	}
}

func TestHTTPTargetAgainstFakeAPI(t *testing.T) {
	ctx := context.Background()
	s := spawnFake(t, ctx, 1)
	defer s.Close()
	target, err := NewHTTP(HTTPConfig{URLs: s.URLs(), Conns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close(ctx)
	// The fake allows 1000 per key.
	d, err := target.Check(ctx, "t", "k1", 999)
	if err != nil || !d.Allowed || d.Remaining != 1 || d.Limit != 1000 || d.ResetAfter != time.Second {
		t.Fatalf("check: %+v %v", d, err)
	}
	d, err = target.Check(ctx, "t", "k1", 2)
	if err != nil || d.Allowed || d.RetryAfter != time.Second {
		t.Fatalf("denied check: %+v %v", d, err)
	}
	if _, err := target.Check(ctx, "nope", "k1", 1); ErrorKind(err) != "http_400" {
		t.Errorf("bad policy: kind %q (%v)", ErrorKind(err), err)
	}
	checks := []Check{{"t", "k2", 1}, {"nope", "k2", 1}, {"t", "k\"2\u00e9", 1000}, {"t", "k2", 1}}
	out := make([]Outcome, len(checks))
	if err := target.CheckBatch(ctx, checks, out); err != nil {
		t.Fatal(err)
	}
	if !out[0].Decision.Allowed || ErrorKind(out[1].Err) != "http_400" || !out[2].Decision.Allowed || out[3].Decision.Allowed != true {
		t.Errorf("batch outcomes %+v", out)
	}
	p, err := FetchPolicy(ctx, nil, s.URLs()[0], "t")
	if err != nil || p.Limit != 1000 || p.Window != time.Hour {
		t.Errorf("policy %+v %v", p, err)
	}
}

func TestScanObject(t *testing.T) {
	var r result
	_, err := scanObject([]byte(` {"allowed" : false, "policy":"a\"b","limit":10,"nested":{"x":[1,{"y":"}"}]},"remaining":3 ,"reset_after_ms":1500,"retry_after_ms":7}`), 0, r.field)
	if err != nil || r.allowed || r.limit != 10 || r.remaining != 3 || r.resetMS != 1500 || r.retryMS != 7 {
		t.Errorf("%+v %v", r, err)
	}
	for _, bad := range []string{``, `{`, `{"a"}`, `{"a":}`, `{"a":1`, `[1]`, `{"a":"x}`} {
		var r result
		if _, err := scanObject([]byte(bad), 0, r.field); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestEventsWithRecovery(t *testing.T) {
	ms := func(n int) Seconds { return Seconds(time.Duration(n) * time.Millisecond) }
	// Errors per 100 ms: some before the first event, a burst after it,
	// one straddling tick shared by two events 30 ms apart, then quiet.
	ticks := []int64{1, 0, 0, 5, 7, 0, 2, 0, 0, 0}
	evs := eventsWithRecovery([]Event{
		{At: ms(650), Kind: "ready"},
		{At: ms(250), Kind: "stop"},
		{At: ms(620), Kind: "other"},
	}, ticks)
	want := []struct {
		kind      string
		errs      int64
		recovered time.Duration
	}{
		{"stop", 12, 250 * time.Millisecond}, // ticks ending 300..600 ms: 5+7; last error tick ends at 500 ms
		{"other", 0, 0},                      // no tick ends in (620, 650]
		{"ready", 2, 50 * time.Millisecond},  // the tick ending at 700 ms
	}
	for i, w := range want {
		e := evs[i]
		if e.Kind != w.kind || e.ErrorsAfter != w.errs || e.RecoveredAfter.D() != w.recovered {
			t.Errorf("event %d: %s %d errors recovered after %v; want %s %d %v", i, e.Kind, e.ErrorsAfter, e.RecoveredAfter.D(), w.kind, w.errs, w.recovered)
		}
	}
}

func TestJSONStrings(t *testing.T) {
	for _, s := range []string{"", "plain:key-1", `q"uote`, `back\slash`, "tab\t", "é", `\"`, `a\\`} {
		b := appendJSONString([]byte("x"), s)
		var got string
		if err := json.Unmarshal(b[1:], &got); err != nil || got != s || b[0] != 'x' {
			t.Errorf("%q encoded as %s: %q %v", s, b, got, err)
		}
		end, err := skipValue(b, 1)
		if err != nil || end != len(b) {
			t.Errorf("skipValue(%s) = %d %v, want %d", b, end, err, len(b))
		}
	}
	for _, bad := range []string{`"abc`, `"ab\"`, `"\\\"`} {
		if _, err := skipValue([]byte(bad), 0); err == nil {
			t.Errorf("skipValue(%s) accepted an unterminated string", bad)
		}
	}
}
