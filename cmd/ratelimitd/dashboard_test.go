package main

// The operator's view end to end: the dashboard in a real headless
// Chromium against three ratelimitd processes, and the metric names the
// Grafana dashboard and the alert rules use, read from a real node.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// artifactDir is where the browser test leaves its screenshots:
// $RATELIMIT_TEST_ARTIFACTS, or a directory under the system's temp.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("RATELIMIT_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "ratelimit-test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser starts a headless Chromium (Debian's chromium; scripts/test.sh
// installs it) with a fresh profile. A missing browser fails the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (scripts/test.sh installs Debian's chromium): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// waitJS evaluates expr in the page until it is true, for up to timeout.
func waitJS(t *testing.T, ctx context.Context, timeout time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("%s: not within %v (err %v); the page reads:\n%s", what, timeout, err, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pageText(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector(%q).innerText`, sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func getPolicyLimit(t *testing.T, url, name string) int64 {
	t.Helper()
	resp, err := adminDo("GET", url+"/v1/policies/"+name, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`"limit":(\d+)`).FindSubmatch(b)
	if resp.StatusCode != 200 || m == nil {
		t.Fatalf("GET policy %s: %d %s", name, resp.StatusCode, b)
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

// TestOperatorView runs three nodes; the dashboard of one shows the
// members, the key a burst denied, and edits a policy that another node
// then enforces, and refuses a wrong token; then the metrics of the
// Grafana dashboard and the alert rules are all served.
func TestOperatorView(t *testing.T) {
	ctx := browser(t)
	env := map[string]string{"RATE_LIMIT_AUTH_MAX": "3", "RATE_LIMIT_AUTH_WINDOW_MS": "900000"}
	// The smallest store, so that a flood of keys makes it evict.
	nodes := startCluster(t, 3, env, func(int) []string { return []string{"--max-keys", "64"} })

	// A burst: 12 checks of one key over the three nodes, 3 allowed.
	const hot = "ip:198.51.100.23"
	denied := 0
	for i := range 12 {
		if r := check(nodes[i%3].URL, "auth", hot, 1); r.Err != nil {
			t.Fatal(r.Err)
		} else if r.Status == http.StatusTooManyRequests {
			denied++
		}
	}
	if denied != 9 {
		t.Fatalf("%d of 12 checks denied, want 9", denied)
	}

	shots := artifactDir(t)
	run := func(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(tctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	useToken := func(t *testing.T, token string) {
		t.Helper()
		run(t, "enter the token "+token,
			chromedp.SetValue(chromedp.CSS("#token"), token),
			chromedp.Click(chromedp.CSS("#token-form button")))
	}

	run(t, "open the dashboard", chromedp.Navigate(nodes[0].URL+"/dashboard"))
	waitJS(t, ctx, 10*time.Second, "the page asks for the token", `document.querySelector("#error").textContent.includes("missing bearer token")`)
	useToken(t, adminToken)

	t.Run("members", func(t *testing.T) {
		waitJS(t, ctx, 15*time.Second, "three members listed", `document.querySelectorAll("#members tbody tr").length === 3`)
		text := pageText(t, ctx, "#members tbody")
		for _, n := range nodes {
			if !strings.Contains(text, n.Name) || !strings.Contains(text, n.Addr) {
				t.Errorf("members table lacks %s at %s:\n%s", n.Name, n.Addr, text)
			}
		}
		if strings.Count(text, "alive") != 3 || !strings.Contains(text, "leader") {
			t.Errorf("members table: want 3 alive and a leader:\n%s", text)
		}
	})

	t.Run("top denied", func(t *testing.T) {
		run(t, "choose auth", chromedp.SetValue(chromedp.CSS("#top-policy"), "auth"))
		waitJS(t, ctx, 15*time.Second, "the denied key listed", fmt.Sprintf(`!!document.querySelector('#top-list li[data-key=%q]')`, hot))
		if got := pageText(t, ctx, "#top-list li:first-child"); !strings.Contains(got, hot) || !strings.Contains(got, "9 denied") {
			t.Errorf("first of the top list %q, want %s with 9 denied", got, hot)
		}
	})

	// The policy edited through the page: default, from 60 a minute to 2
	// an hour.
	before := getPolicyLimit(t, nodes[2].URL, "default")
	editDefault := func(t *testing.T) {
		t.Helper()
		run(t, "edit default",
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := chromedp.Evaluate[bool](`(document.querySelector('button[data-edit="default"]').click(), true)`)(ctx, tg)
				return err
			}),
			chromedp.SetValue(chromedp.CSS("#f-limit"), "2"),
			chromedp.SetValue(chromedp.CSS("#f-window"), "3600000"),
			chromedp.Click(chromedp.CSS("#f-save")))
	}

	t.Run("wrong token", func(t *testing.T) {
		useToken(t, "not-the-token")
		waitJS(t, ctx, 10*time.Second, "the reads refused", `document.querySelector("#error").textContent.includes("wrong bearer token")`)
		editDefault(t)
		waitJS(t, ctx, 10*time.Second, "the write refused", `document.querySelector("#f-status").textContent.startsWith("not saved")`)
		if got := pageText(t, ctx, "#f-status"); !strings.Contains(got, "wrong bearer token") {
			t.Errorf("status %q, want the API's error", got)
		}
		for _, n := range nodes {
			if got := getPolicyLimit(t, n.URL, "default"); got != before {
				t.Fatalf("%s: default's limit %d after a refused write, want %d", n.Name, got, before)
			}
		}
	})

	t.Run("edit enforced elsewhere", func(t *testing.T) {
		useToken(t, adminToken)
		waitJS(t, ctx, 10*time.Second, "the error cleared", `document.querySelector("#error").hidden`)
		editDefault(t)
		waitJS(t, ctx, 15*time.Second, "the write saved", `document.querySelector("#f-status").textContent.startsWith("saved default: limit 2")`)
		deadline := time.Now().Add(10 * time.Second)
		for getPolicyLimit(t, nodes[2].URL, "default") != 2 {
			if time.Now().After(deadline) {
				t.Fatal("n3 did not get the edited policy")
			}
			time.Sleep(50 * time.Millisecond)
		}
		var statuses []int
		for range 3 {
			r := check(nodes[2].URL, "default", "user:edited", 1)
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			statuses = append(statuses, r.Status)
		}
		if fmt.Sprint(statuses) != "[200 200 429]" {
			t.Fatalf("checks on n3 after the edit: %v, want [200 200 429]", statuses)
		}
		waitJS(t, ctx, 10*time.Second, "the table shows the edit",
			`document.querySelector('#policy-table tr[data-policy="default"]').innerText.includes("3600000 ms")`)
	})

	t.Run("evictions", func(t *testing.T) {
		// 600 new keys in one batch, about 200 a node: more than a store
		// of 64 counters holds. The page shows the evictions, with the
		// hand-offs and copies.
		var b strings.Builder
		b.WriteString(`{"checks":[`)
		for i := range 600 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"policy":"default","key":"flood:%d"}`, i)
		}
		b.WriteString(`]}`)
		resp, err := testClient.Post(nodes[1].URL+"/v1/check/batch", "application/json", strings.NewReader(b.String()))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("batch: %d", resp.StatusCode)
		}
		for _, c := range []string{"handoff_sent", "replica_sent", "replica_evictions", "peer_errors"} {
			waitJS(t, ctx, 10*time.Second, "the counter "+c+" shown", fmt.Sprintf(`!!document.querySelector('#counters [data-counter=%q]')`, c))
		}
		waitJS(t, ctx, 15*time.Second, "the evictions counted on the page",
			`Number(document.querySelector('#counters [data-counter="evictions"] dd span').textContent.replace(/[()]/g, "")) > 0`)
	})

	t.Run("screenshots", func(t *testing.T) {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		wide := filepath.Join(shots, "dashboard.png")
		if err := os.WriteFile(wide, png, 0o644); err != nil {
			t.Fatal(err)
		}
		// On a phone-sized screen nothing runs off the side.
		run(t, "phone size", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), phone), chromedp.Sleep(300*time.Millisecond))
		overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > document.documentElement.clientWidth`))
		if err != nil {
			t.Fatal(err)
		}
		if png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if overflow {
			t.Error("the page is wider than a phone's screen")
		}
		phone := filepath.Join(shots, "dashboard-phone.png")
		if err := os.WriteFile(phone, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshots: %s, %s", wide, phone)
	})

	t.Run("metric names", func(t *testing.T) {
		// A frozen owner makes the others fall back for its keys (the
		// forward times out before gossip drops it from the ring, a peer
		// error), so that every series the rules use exists. The cleanup
		// kills it by pid.
		frozen := nodes[2]
		frozen.signal(syscall.SIGSTOP)
		served := metricNames(t, nodes[0].URL)
		deadline := time.Now().Add(15 * time.Second)
		for i := 0; !(served["ratelimit_fallbacks_total"] && served["ratelimit_peer_errors_total"]) && time.Now().Before(deadline); i++ {
			key := "k" + strconv.Itoa(i)
			if owner("default", key, "n1", "n2", "n3") == frozen.Name {
				check(nodes[0].URL, "default", key, 1)
				served = metricNames(t, nodes[0].URL)
			}
		}
		used := monitoringNames(t)
		if len(used) < 10 {
			t.Fatalf("only %d metric names found in deploy/: the test reads them wrong", len(used))
		}
		for _, name := range used {
			if name != "up" && !served[name] {
				t.Errorf("deploy/ uses %s, which no node serves", name)
			}
		}
	})
}

// phone emulates a phone's screen: the viewport meta tag, overlay
// scrollbars and touch.
func phone(p *emulation.SetDeviceMetricsOverrideParams, touch *emulation.SetTouchEmulationEnabledParams) {
	p.Mobile = true
	touch.Enabled = true
}

// metricNames are the sample names a node serves on /metrics.
func metricNames(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := testClient.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

var metricName = regexp.MustCompile(`\bratelimit_[a-z0-9_]+\b|\bup\{`)

// monitoringNames are the metric names that the Grafana dashboard and the
// alert rules use (every ratelimit_ name in them; "up" is Prometheus's
// own).
func monitoringNames(t *testing.T) []string {
	t.Helper()
	set := map[string]bool{}
	for _, f := range []string{"../../deploy/grafana/dashboards/ratelimitd.json", "../../deploy/prometheus/alerts.yml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metricName.FindAllString(string(b), -1) {
			set[strings.TrimSuffix(m, "{")] = true
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
