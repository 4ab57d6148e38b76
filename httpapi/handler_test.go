package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/buckettest"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
	"github.com/vibewell/ratelimit/internal/leakcheck"
)

func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }

// testPolicies: one of each algorithm, with simple numbers.
func testPolicies() []bucket.Policy {
	return []bucket.Policy{
		{Name: "auth", Limit: 10, Window: 15 * time.Minute},
		{Name: "api_limit", Algorithm: bucket.GCRA, Limit: 5, Window: time.Second},
		{Name: "fixed", Algorithm: bucket.FixedWindow, Limit: 2, Window: 10 * time.Second},
		{Name: "vip", Limit: 5, Window: time.Minute, Overrides: map[string]int64{"gold": 50}},
		{Name: "bench", Limit: 1 << 31, Window: time.Hour}, // never denies in a benchmark
	}
}

// failingChecker is a real node whose checks of the key "fail" fail, as
// they would with a backend down and no failure mode to fall back on. (A
// node hides store failures behind the policy's failure mode.)
type failingChecker struct{ *cluster.Node }

func (c failingChecker) Allow(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	if key == "fail" {
		return bucket.Decision{}, fmt.Errorf("%w: connection refused", bucket.ErrBackend)
	}
	return c.Node.Allow(ctx, policy, key, hits)
}

// AllowBatch fails the checks of the key "fail" the same way, and decides
// the rest in one call to the node's AllowBatch.
func (c failingChecker) AllowBatch(ctx context.Context, reqs []bucket.Request, out []bucket.Result) error {
	var pass []bucket.Request
	var idx []int
	for i, r := range reqs {
		if r.Key == "fail" {
			out[i] = bucket.Result{Err: fmt.Errorf("%w: connection refused", bucket.ErrBackend)}
			continue
		}
		pass = append(pass, r)
		idx = append(idx, i)
	}
	res := make([]bucket.Result, len(pass))
	if err := c.Node.AllowBatch(ctx, pass, res); err != nil {
		return err
	}
	for j, i := range idx {
		out[i] = res[j]
	}
	return nil
}

type env struct {
	node    *cluster.Node
	checker failingChecker // node, failing the key "fail"
	clock   *buckettest.ManualClock
	handler http.Handler
	srv     *httptest.Server
	reg     *prometheus.Registry
}

// newEnv starts a node on a manual clock at buckettest.Epoch, its handler
// (with opts; Checker, Gatherer and Metrics are filled in) and a server.
func newEnv(t testing.TB, opts httpapi.Options) *env {
	t.Helper()
	e := &env{clock: buckettest.NewManualClock(buckettest.Epoch), reg: prometheus.NewRegistry()}
	node, err := cluster.Start(context.Background(), cluster.Config{
		Clock: e.clock, Policies: testPolicies(), Metrics: e.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.node, e.checker = node, failingChecker{node}
	t.Cleanup(func() { _ = node.Close(context.Background()) })
	opts.Checker, opts.Gatherer, opts.Metrics = e.checker, e.reg, e.reg
	if e.handler, err = httpapi.NewHandler(opts); err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.handler)
	t.Cleanup(e.srv.Close)
	return e
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) decode(t testing.TB, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(a.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %q: %v", a.body, err)
	}
}

func (e *env) do(t testing.TB, method, path, contentType, body string, header ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func (e *env) check(t testing.TB, body string) answer {
	t.Helper()
	return e.do(t, "POST", "/v1/check", "application/json", body)
}

// wantHeaders asserts every rate-limit header.
func wantHeaders(t *testing.T, h http.Header, policy, rlPolicy, rl, limit, remaining, reset, retryAfter string) {
	t.Helper()
	for _, c := range []struct{ name, want string }{
		{"RateLimit-Policy", rlPolicy}, {"RateLimit", rl}, {"X-RateLimit-Limit", limit},
		{"X-RateLimit-Remaining", remaining}, {"X-RateLimit-Reset", reset}, {"Retry-After", retryAfter},
	} {
		if got := h.Values(c.name); strings.Join(got, "|") != c.want {
			t.Errorf("%s header %s = %q, want %q", policy, c.name, got, c.want)
		}
	}
}

func TestCheckAuthPolicyUntilDenied(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for i := 1; i <= 11; i++ {
		a := e.check(t, `{"policy":"auth","key":"ip:1.2.3.4"}`)
		var r httpapi.CheckResponse
		a.decode(t, &r)
		if ct := a.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		if i <= 10 {
			want := httpapi.CheckResponse{Allowed: true, Policy: "auth", Limit: 10, Remaining: int64(10 - i), ResetAfterMS: r.ResetAfterMS}
			if a.status != 200 || r != want || r.ResetAfterMS <= 0 {
				t.Fatalf("check %d: %d %+v, want 200 %+v", i, a.status, r, want)
			}
			reset := strconv.FormatInt((r.ResetAfterMS+999)/1000, 10)
			wantHeaders(t, a.header, "auth", `"auth";q=10;w=900`, `"auth";r=`+strconv.Itoa(10-i)+";t="+reset,
				"10", strconv.Itoa(10-i), reset, "")
			continue
		}
		if a.status != 429 || r.Allowed || r.Remaining != 0 || r.RetryAfterMS <= 0 || r.Policy != "auth" {
			t.Fatalf("check 11: %d %+v, want 429 denied", a.status, r)
		}
		reset := strconv.FormatInt((r.ResetAfterMS+999)/1000, 10)
		retry := strconv.FormatInt((r.RetryAfterMS+999)/1000, 10)
		wantHeaders(t, a.header, "auth", `"auth";q=10;w=900`, `"auth";r=0;t=`+reset, "10", "0", reset, retry)
	}
}

func TestCheckRoundsUp(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	// GCRA 5/s: one hit schedules the next for 200 ms later.
	a := e.check(t, `{"policy":"api_limit","key":"k"}`)
	var r httpapi.CheckResponse
	a.decode(t, &r)
	if a.status != 200 || r.ResetAfterMS != 200 || r.Limit != 1 || r.Remaining != 0 {
		t.Fatalf("first: %d %+v", a.status, r)
	}
	wantHeaders(t, a.header, "api_limit", `"api_limit";q=5;w=1`, `"api_limit";r=0;t=1`, "1", "0", "1", "")

	e.clock.Advance(500 * time.Microsecond) // 199.5 ms left: ms and s round up
	a = e.check(t, `{"policy":"api_limit","key":"k"}`)
	a.decode(t, &r)
	want := httpapi.CheckResponse{Policy: "api_limit", Limit: 1, ResetAfterMS: 200, RetryAfterMS: 200}
	if a.status != 429 || r != want {
		t.Fatalf("second: %d %+v, want 429 %+v", a.status, r, want)
	}
	wantHeaders(t, a.header, "api_limit", `"api_limit";q=5;w=1`, `"api_limit";r=0;t=1`, "1", "0", "1", "1")

	// More hits than the capacity can never pass: no wait helps, yet
	// Retry-After is at least 1 second.
	a = e.check(t, `{"policy":"api_limit","key":"fresh","hits":3}`)
	a.decode(t, &r)
	want = httpapi.CheckResponse{Policy: "api_limit", Limit: 1, Remaining: 1}
	if a.status != 429 || r != want {
		t.Fatalf("over capacity: %d %+v, want 429 %+v", a.status, r, want)
	}
	wantHeaders(t, a.header, "api_limit", `"api_limit";q=5;w=1`, `"api_limit";r=1;t=0`, "1", "1", "0", "1")

	// A fixed window of 10 s, aligned at the epoch.
	a = e.check(t, `{"policy":"fixed","key":"k","hits":2}`)
	a.decode(t, &r)
	if a.status != 200 || r.Remaining != 0 || r.ResetAfterMS != 10000-0 {
		t.Fatalf("fixed: %d %+v", a.status, r)
	}
	wantHeaders(t, a.header, "fixed", `"fixed";q=2;w=10`, `"fixed";r=0;t=10`, "2", "0", "10", "")
}

func TestCheckHits(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	steps := []struct {
		body          string
		status        int
		remainingLeft int64
	}{
		{`{"policy":"auth","key":"h"}`, 200, 9},             // omitted hits = 1
		{`{"policy":"auth","key":"h","hits":0}`, 200, 9},    // peek
		{`{"policy":"auth","key":"h","hits":3}`, 200, 6},    // several
		{`{"hits":7,"key":"h","policy":"auth"}`, 429, 6},    // too many: nothing taken
		{`{"policy":"auth","key":"h","hits":null}`, 200, 5}, // null = omitted
		{`{"policy":"auth","key":"h","hits":5}`, 200, 0},
		{`{"policy":"auth","key":"h","hits":0}`, 429, 0}, // a peek at an empty counter is denied
	}
	for i, s := range steps {
		a := e.check(t, s.body)
		var r httpapi.CheckResponse
		a.decode(t, &r)
		if a.status != s.status || r.Remaining != s.remainingLeft {
			t.Fatalf("step %d %s: %d remaining %d, want %d remaining %d", i, s.body, a.status, r.Remaining, s.status, s.remainingLeft)
		}
	}
}

// TestCheckOverrideLimitInHeaders: a key's override sets every header's
// limit; the reset headers agree with the body's reset_after_ms.
func TestCheckOverrideLimitInHeaders(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for _, c := range []struct{ key, limit, remaining string }{{"gold", "50", "49"}, {"plain", "5", "4"}} {
		a := e.check(t, `{"policy":"vip","key":"`+c.key+`"}`)
		var r httpapi.CheckResponse
		a.decode(t, &r)
		if r.ResetAfterMS <= 0 || r.ResetAfterMS > 67_500 { // the sliding window: 60 s × 9/8
			t.Fatalf("key %s: reset_after_ms %d, want within the window", c.key, r.ResetAfterMS)
		}
		reset := strconv.FormatInt((r.ResetAfterMS+999)/1000, 10)
		wantHeaders(t, a.header, "vip", `"vip";q=`+c.limit+`;w=60`, `"vip";r=`+c.remaining+`;t=`+reset, c.limit, c.remaining, reset, "")
	}
}

func TestCheckSlowPathDecodesTheSame(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	// Escapes, a non-ASCII key and a different field case all take the
	// encoding/json path; the key they name is the same counter.
	for i, body := range []string{
		`{"policy":"auth","key":"caf\u00e9"}`,
		`{"policy":"auth","key":"café"}`,
		`{"Policy":"auth","KEY":"café","hits":1}`,
		"\n{ \"policy\" : \"auth\" , \"key\" : \"caf\\u00e9\" }\n",
	} {
		a := e.check(t, body)
		var r httpapi.CheckResponse
		a.decode(t, &r)
		if a.status != 200 || r.Remaining != int64(9-i) {
			t.Fatalf("%s: %d %+v, want remaining %d", body, a.status, r, 9-i)
		}
	}
}

func TestCheckBadInput(t *testing.T) {
	e := newEnv(t, httpapi.Options{MaxBodyBytes: 200, MaxKeyLen: 16, MaxHits: 100})
	cases := []struct {
		name, method, ctype, body string
		status                    int
		field, msg                string
	}{
		{"malformed", "POST", "", `{"policy":"auth",`, 400, "", "malformed JSON"},
		{"syntax", "POST", "", `{"policy" "auth"}`, 400, "", "malformed JSON"},
		{"empty body", "POST", "", ``, 400, "", "empty body"},
		{"not an object", "POST", "", `[1,2]`, 400, "", "want a JSON object"},
		{"unknown field", "POST", "", `{"policy":"auth","key":"k","hist":1}`, 400, "hist", "unknown field"},
		{"trailing data", "POST", "", `{"policy":"auth","key":"k"} {}`, 400, "", "data after the object"},
		{"trailing garbage", "POST", "", `{"policy":"auth","key":"k"}x`, 400, "", "data after the object"},
		{"missing policy", "POST", "", `{"key":"k"}`, 400, "policy", "policy is required"},
		{"unknown policy", "POST", "", `{"policy":"nope","key":"k"}`, 400, "policy", `unknown policy "nope"`},
		{"policy not a string", "POST", "", `{"policy":5,"key":"k"}`, 400, "policy", "want a string"},
		{"empty key", "POST", "", `{"policy":"auth","key":""}`, 400, "key", "key is required"},
		{"missing key", "POST", "", `{"policy":"auth"}`, 400, "key", "key is required"},
		{"long key", "POST", "", `{"policy":"auth","key":"12345678901234567"}`, 400, "key", "longer than 16"},
		{"negative hits", "POST", "", `{"policy":"auth","key":"k","hits":-1}`, 400, "hits", "must not be negative"},
		{"huge hits", "POST", "", `{"policy":"auth","key":"k","hits":101}`, 400, "hits", "at most 100"},
		{"hits beyond int64", "POST", "", `{"policy":"auth","key":"k","hits":1e30}`, 400, "hits", "want an integer"},
		{"fractional hits", "POST", "", `{"policy":"auth","key":"k","hits":1.5}`, 400, "hits", "want an integer"},
		{"hits as string", "POST", "", `{"policy":"auth","key":"k","hits":"1"}`, 400, "hits", "want an integer"},
		{"oversized body", "POST", "", `{"policy":"auth","key":"` + strings.Repeat("a", 300) + `"}`, 413, "", "larger than 200 bytes"},
		{"wrong method", "GET", "", ``, 405, "", "method GET not allowed"},
		{"put", "PUT", "", `{}`, 405, "", "method PUT not allowed"},
		{"msgpack unknown field", "POST", "application/msgpack", "\x81\xa1x\x01", 400, "x", "unknown field"},
		{"msgpack truncated", "POST", "application/msgpack", "\x82\xa6policy", 400, "", "malformed msgpack"},
		{"msgpack trailing data", "POST", "application/msgpack", "\x80\x80", 400, "", "data after the map"},
		{"msgpack not a map", "POST", "application/msgpack", "\x05", 400, "", "malformed msgpack"},
		{"msgpack empty", "POST", "application/msgpack", "", 400, "", "empty body"},
		{"msgpack missing key", "POST", "application/msgpack", "\x81\xa6policy\xa4auth", 400, "key", "key is required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := e.do(t, c.method, "/v1/check", c.ctype, c.body)
			var r httpapi.ErrorResponse
			a.decode(t, &r)
			if a.status != c.status || r.Field != c.field || !strings.Contains(r.Error, c.msg) {
				t.Errorf("%d %+v, want %d field %q error containing %q", a.status, r, c.status, c.field, c.msg)
			}
			if a.header.Get("Content-Type") != "application/json" || a.header.Get("RateLimit") != "" || a.header.Get("Retry-After") != "" {
				t.Errorf("headers %v", a.header)
			}
			if c.status == 405 && a.header.Get("Allow") != "POST" {
				t.Errorf("Allow %q", a.header.Get("Allow"))
			}
		})
	}
	// None of these took a hit.
	if d, _ := e.node.Allow(context.Background(), "auth", "k", 0); d.Remaining != 10 {
		t.Errorf("bad input consumed hits: remaining %d", d.Remaining)
	}
}

func TestOversizedBodyWithoutContentLength(t *testing.T) {
	e := newEnv(t, httpapi.Options{MaxBodyBytes: 64})
	body := `{"policy":"auth","key":"` + strings.Repeat("a", 100) + `"}`
	// A chunked body has no Content-Length: the limit applies while reading.
	req := httptest.NewRequest("POST", "/v1/check", io.MultiReader(strings.NewReader(body)))
	req.ContentLength = -1
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	if rec.Code != 413 || !strings.Contains(rec.Body.String(), "larger than 64 bytes") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

func TestCheckBackendFailure(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	a := e.check(t, `{"policy":"auth","key":"fail"}`)
	var r httpapi.ErrorResponse
	a.decode(t, &r)
	if a.status != 503 || !strings.Contains(r.Error, "connection refused") {
		t.Fatalf("%d %+v, want 503", a.status, r)
	}
	// A closed node is not the caller's fault either.
	_ = e.node.Close(context.Background())
	a = e.check(t, `{"policy":"auth","key":"k"}`)
	a.decode(t, &r)
	if a.status != 503 || !strings.Contains(r.Error, "closed") {
		t.Fatalf("%d %+v, want 503", a.status, r)
	}
}

func TestBatch(t *testing.T) {
	e := newEnv(t, httpapi.Options{MaxBatch: 8})
	body := `{"checks":[
		{"policy":"fixed","key":"b"},
		{"policy":"fixed","key":"b","hits":1},
		{"policy":"fixed","key":"b"},
		{"policy":"nope","key":"b"},
		{"policy":"fixed","key":""},
		{"policy":"fixed","key":"b","extra":1},
		7,
		{"policy":"auth","key":"fail"}
	]}`
	a := e.do(t, "POST", "/v1/check/batch", "application/json", body)
	var r httpapi.BatchResponse
	a.decode(t, &r)
	if a.status != 200 || len(r.Results) != 8 {
		t.Fatalf("%d %s", a.status, a.body)
	}
	dec := func(allowed bool, remaining, retry int64) httpapi.CheckResult {
		return httpapi.CheckResult{CheckResponse: httpapi.CheckResponse{Allowed: allowed, Policy: "fixed", Limit: 2,
			Remaining: remaining, ResetAfterMS: 10000, RetryAfterMS: retry}}
	}
	want := []httpapi.CheckResult{
		dec(true, 1, 0), dec(true, 0, 0), dec(false, 0, 10000),
		{Error: `unknown policy "nope"`, Field: "policy", Status: 400},
		{Error: "key is required", Field: "key", Status: 400},
		{Error: `unknown field "extra"`, Field: "extra", Status: 400},
		{Error: "want a JSON object, got number", Status: 400},
		{Status: 503},
	}
	for i := range want {
		got := r.Results[i]
		if i == 7 && strings.Contains(got.Error, "connection refused") {
			got.Error = ""
		}
		if got != want[i] {
			t.Errorf("result %d = %+v, want %+v", i, got, want[i])
		}
	}
	if a.header.Get("RateLimit") != "" {
		t.Error("a batch answer carries no per-check headers")
	}
}

func TestBatchFastAndSlowPathsAgree(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	plain := `{"checks":[{"policy":"auth","key":"x","hits":2},{"policy":"auth","key":"y"}]}`
	escaped := `{"checks":[{"policy":"auth","key":"\u0078","hits":2},{"policy":"auth","key":"y"}]}`
	var r1, r2 httpapi.BatchResponse
	e.do(t, "POST", "/v1/check/batch", "", plain).decode(t, &r1)
	e.do(t, "POST", "/v1/check/batch", "", escaped).decode(t, &r2)
	if r1.Results[0].Remaining != 8 || r2.Results[0].Remaining != 6 || r1.Results[1].Remaining != 9 || r2.Results[1].Remaining != 8 {
		t.Fatalf("fast %+v slow %+v", r1, r2)
	}
}

func TestBatchBadInput(t *testing.T) {
	e := newEnv(t, httpapi.Options{MaxBatch: 3})
	cases := []struct {
		name, method, body string
		status             int
		field, msg         string
	}{
		{"too large", "POST", `{"checks":[{},{},{},{}]}`, 400, "checks", "larger than 3"},
		{"malformed", "POST", `{"checks":[`, 400, "", "malformed JSON"},
		{"checks not an array", "POST", `{"checks":{}}`, 400, "checks", "want an array"},
		{"unknown field", "POST", `{"checks":[],"more":1}`, 400, "more", "unknown field"},
		{"trailing data", "POST", `{"checks":[]}]`, 400, "", "data after the object"},
		{"wrong method", "GET", ``, 405, "", "not allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := e.do(t, c.method, "/v1/check/batch", "", c.body)
			var r httpapi.ErrorResponse
			a.decode(t, &r)
			if a.status != c.status || r.Field != c.field || !strings.Contains(r.Error, c.msg) {
				t.Errorf("%d %+v, want %d field %q error containing %q", a.status, r, c.status, c.field, c.msg)
			}
		})
	}
	for _, body := range []string{`{"checks":[]}`, `{}`, `{"checks":null}`} {
		a := e.do(t, "POST", "/v1/check/batch", "", body)
		if a.status != 200 || string(a.body) != "{\"results\":[]}\n" {
			t.Errorf("%s: %d %s", body, a.status, a.body)
		}
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	// Query, then headers (as nginx passes them), then a mix: the query
	// wins over the header. All name the same counter.
	for i, c := range []struct {
		method, query string
		header        []string
	}{
		{"GET", "?policy=fixed&key=10.0.0.1", nil},
		{"POST", "?policy=fixed", []string{"X-RateLimit-Key", "10.0.0.1"}},
		{"GET", "", []string{"X-RateLimit-Policy", "fixed", "X-RateLimit-Key", "10.0.0.1"}},
		{"HEAD", "?key=10.0.0.1&policy=fixed", []string{"X-RateLimit-Key", "10.9.9.9"}},
	} {
		a := e.do(t, c.method, "/v1/auth"+c.query, "", "", c.header...)
		switch i {
		case 0, 1:
			if a.status != 204 || len(a.body) != 0 {
				t.Fatalf("auth %d: %d %q, want 204", i, a.status, a.body)
			}
			wantHeaders(t, a.header, "fixed", `"fixed";q=2;w=10`, `"fixed";r=`+strconv.Itoa(1-i)+`;t=10`, "2", strconv.Itoa(1-i), "10", "")
		default:
			if a.status != 403 {
				t.Fatalf("auth %d: %d %q, want 403", i, a.status, a.body)
			}
			wantHeaders(t, a.header, "fixed", `"fixed";q=2;w=10`, `"fixed";r=0;t=10`, "2", "0", "10", "10")
		}
	}
	if a := e.do(t, "GET", "/v1/auth?policy=fixed&key=other&hits=2", "", ""); a.status != 204 || a.header.Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("hits=2: %d %v", a.status, a.header)
	}
	for _, c := range []struct {
		query      string
		status     int
		field, msg string
	}{
		{"?policy=fixed", 400, "key", "key is required"},
		{"?key=k", 400, "policy", "policy is required"},
		{"?policy=nope&key=k", 400, "policy", "unknown policy"},
		{"?policy=fixed&key=k&hits=x", 400, "hits", "want an integer"},
		{"?policy=fixed&key=k&hits=-2", 400, "hits", "must not be negative"},
		{"?policy=auth&key=fail", 503, "", "check failed"},
	} {
		a := e.do(t, "GET", "/v1/auth"+c.query, "", "")
		var r httpapi.ErrorResponse
		a.decode(t, &r)
		if a.status != c.status || r.Field != c.field || !strings.Contains(r.Error, c.msg) {
			t.Errorf("%s: %d %+v, want %d %q %q", c.query, a.status, r, c.status, c.field, c.msg)
		}
	}
}

func TestPolicies(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	a := e.do(t, "GET", "/v1/policies", "", "")
	var r httpapi.PoliciesResponse
	a.decode(t, &r)
	want, _ := json.Marshal(httpapi.PoliciesResponse{Policies: e.node.Policies()})
	got, _ := json.Marshal(r)
	if a.status != 200 || string(got) != string(want) || len(r.Policies) != 5 {
		t.Fatalf("%d %s, want %s", a.status, got, want)
	}
	if !strings.Contains(string(a.body), `"window_ms":900000`) {
		t.Errorf("policies not in their JSON form: %s", a.body)
	}
	if a := e.do(t, "DELETE", "/v1/policies", "", ""); a.status != 405 || a.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("DELETE: %d %v", a.status, a.header)
	}
}

func TestHealthReadyMetricsAndNotFound(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	e.check(t, `{"policy":"auth","key":"m"}`)
	e.do(t, "POST", "/v1/check/batch", "", `{"checks":[]}`)
	e.do(t, "GET", "/v1/auth?policy=auth&key=m", "", "")
	if a := e.do(t, "GET", "/healthz", "", ""); a.status != 200 {
		t.Errorf("healthz %d", a.status)
	}
	if a := e.do(t, "GET", "/readyz", "", ""); a.status != 200 {
		t.Errorf("readyz %d", a.status)
	}
	a := e.do(t, "GET", "/metrics", "", "")
	for _, want := range []string{
		`ratelimit_http_check_duration_seconds_count{endpoint="check"} 1`,
		`ratelimit_http_check_duration_seconds_count{endpoint="batch"} 1`,
		`ratelimit_http_check_duration_seconds_count{endpoint="auth"} 1`,
		`ratelimit_decisions_total{policy="auth",result="allowed"} 2`,
	} {
		if a.status != 200 || !strings.Contains(string(a.body), want) {
			t.Errorf("metrics %d lack %q:\n%s", a.status, want, a.body)
		}
	}
	if a := e.do(t, "GET", "/nowhere", "", ""); a.status != 404 || !strings.Contains(string(a.body), `"error":"no such endpoint: /nowhere"`) {
		t.Errorf("404: %d %s", a.status, a.body)
	}
	_ = e.node.Close(context.Background())
	if a := e.do(t, "GET", "/readyz", "", ""); a.status != 503 {
		t.Errorf("readyz after close %d", a.status)
	}
	if a := e.do(t, "GET", "/healthz", "", ""); a.status != 200 {
		t.Errorf("healthz after close %d", a.status)
	}
}

func TestMetricsOptional(t *testing.T) {
	node, err := cluster.Start(context.Background(), cluster.Config{Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(context.Background())
	h, err := httpapi.NewHandler(httpapi.Options{Checker: node})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Errorf("/metrics without a Gatherer: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/check", strings.NewReader(`{"policy":"auth","key":"k"}`)))
	if rec.Code != 200 {
		t.Errorf("check without metrics: %d %s", rec.Code, rec.Body)
	}
}

func TestNewHandlerOptions(t *testing.T) {
	node, err := cluster.Start(context.Background(), cluster.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(context.Background())
	for _, o := range []httpapi.Options{
		{},
		{Checker: node, MaxBatch: -1},
		{Checker: node, MaxBodyBytes: -1},
		{Checker: node, MaxKeyLen: -1},
		{Checker: node, MaxHits: -1},
	} {
		if _, err := httpapi.NewHandler(o); !errors.Is(err, httpapi.ErrInvalidOptions) {
			t.Errorf("%+v: %v, want ErrInvalidOptions", o, err)
		}
	}
	reg := prometheus.NewRegistry()
	if _, err := httpapi.NewHandler(httpapi.Options{Checker: node, Metrics: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := httpapi.NewHandler(httpapi.Options{Checker: node, Metrics: reg}); err == nil {
		t.Error("registering the collectors twice succeeded")
	}
}

func TestQueryEscapedKey(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	key := "user:ä&b=c"
	a := e.do(t, "GET", "/v1/auth?policy=fixed&key="+url.QueryEscape(key), "", "")
	if a.status != 204 {
		t.Fatalf("%d %s", a.status, a.body)
	}
	if d, _ := e.node.Allow(context.Background(), "fixed", key, 0); d.Remaining != 1 {
		t.Errorf("the decoded key was not the one checked: remaining %d", d.Remaining)
	}
}

func TestMsgpackBodies(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	body, err := msgpack.Marshal(map[string]any{"policy": "fixed", "key": "mp"})
	if err != nil {
		t.Fatal(err)
	}
	a := e.do(t, "POST", "/v1/check", "application/msgpack", string(body))
	var r httpapi.CheckResponse
	a.decode(t, &r)
	if a.status != 200 || r.Remaining != 1 || a.header.Get("RateLimit") != `"fixed";r=1;t=10` {
		t.Fatalf("%d %+v %v", a.status, r, a.header)
	}
	batch, err := msgpack.Marshal(httpapi.BatchRequest{Checks: []httpapi.CheckRequest{
		{Policy: "fixed", Key: "mp", Hits: 0}, {Policy: "fixed", Key: "mp", Hits: 1}, {Policy: "fixed", Key: "mp", Hits: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// With the parameters Content-Type may carry.
	a = e.do(t, "POST", "/v1/check/batch", "application/x-msgpack; charset=binary", string(batch))
	var br httpapi.BatchResponse
	a.decode(t, &br)
	if a.status != 200 || len(br.Results) != 3 || !br.Results[0].Allowed || br.Results[1].Remaining != 0 || br.Results[2].Allowed {
		t.Fatalf("%d %s", a.status, a.body)
	}
	items, _ := msgpack.Marshal(map[string]any{"checks": []any{map[string]any{"policy": "fixed", "key": "q", "bad": 1}, 5}})
	a = e.do(t, "POST", "/v1/check/batch", "application/msgpack", string(items))
	a.decode(t, &br)
	if a.status != 200 || len(br.Results) != 2 || br.Results[0].Field != "bad" || br.Results[1].Status != 400 {
		t.Fatalf("%d %s", a.status, a.body)
	}
}

func TestMsgpackBatchBounds(t *testing.T) {
	e := newEnv(t, httpapi.Options{MaxBatch: 3})
	for _, c := range []struct {
		name, body string
		status     int
		field, msg string
	}{
		// An array header claiming 4 billion checks in a 12-byte body.
		{"huge header", "\x81\xa6checks\xdd\xff\xff\xff\xff", 400, "checks", "larger than 3"},
		{"header beyond the body", "\x81\xa6checks\x93\x80", 400, "checks", "3 checks in 1 bytes"},
		{"too many", "\x81\xa6checks\x94\x80\x80\x80\x80", 400, "checks", "larger than 3"},
		{"unknown field", "\x81\xa5other\x90", 400, "other", "unknown field"},
		{"truncated item", "\x81\xa6checks\x91\x82\xa6policy", 400, "", "malformed msgpack"},
		{"trailing data", "\x81\xa6checks\x90\xc0", 400, "", "data after the map"},
	} {
		a := e.do(t, "POST", "/v1/check/batch", "application/msgpack", c.body)
		var r httpapi.ErrorResponse
		a.decode(t, &r)
		if a.status != c.status || r.Field != c.field || !strings.Contains(r.Error, c.msg) {
			t.Errorf("%s: %d %+v, want %d %q %q", c.name, a.status, r, c.status, c.field, c.msg)
		}
	}
	if a := e.do(t, "POST", "/v1/check/batch", "application/msgpack", "\x81\xa6checks\xc0"); a.status != 200 || string(a.body) != "{\"results\":[]}\n" {
		t.Errorf("nil checks: %d %s", a.status, a.body)
	}
}

// countingChecker counts how the handler reaches the node.
type countingChecker struct {
	*cluster.Node
	allow, batch *atomic.Int64
}

func (c countingChecker) Allow(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	c.allow.Add(1)
	return c.Node.Allow(ctx, policy, key, hits)
}

func (c countingChecker) AllowBatch(ctx context.Context, reqs []bucket.Request, out []bucket.Result) error {
	c.batch.Add(1)
	return c.Node.AllowBatch(ctx, reqs, out)
}

// TestBatchUsesAllowBatch: a batch reaches a node that batches in one call,
// so a cluster sends each owner its share in one message and the Redis
// store pipelines.
func TestBatchUsesAllowBatch(t *testing.T) {
	node, err := cluster.Start(context.Background(), cluster.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(context.Background())
	c := countingChecker{Node: node, allow: new(atomic.Int64), batch: new(atomic.Int64)}
	h, err := httpapi.NewHandler(httpapi.Options{Checker: c})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/check/batch", strings.NewReader(
		`{"checks":[{"policy":"auth","key":"a"},{"policy":"auth","key":"b"},{"policy":"nope","key":"c"}]}`)))
	if rec.Code != 200 || c.batch.Load() != 1 || c.allow.Load() != 0 {
		t.Fatalf("status %d, AllowBatch calls %d, Allow calls %d; want 200, 1, 0", rec.Code, c.batch.Load(), c.allow.Load())
	}
}
