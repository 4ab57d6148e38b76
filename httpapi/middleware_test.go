package httpapi_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
)

func hello(calls *int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*calls++
		w.Header().Set("X-App", "yes")
		_, _ = w.Write([]byte("hello"))
	})
}

func TestMiddlewareAllowsThenDenies(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	var calls int
	h := httpapi.Middleware(e.checker, "fixed", httpapi.ClientIP(httpapi.ClientIPConfig{}), httpapi.MiddlewareOptions{})(hello(&calls))
	srv := httptest.NewServer(h)
	defer srv.Close()
	for i := 0; i < 3; i++ {
		resp, err := srv.Client().Get(srv.URL + "/page")
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if i < 2 {
			if resp.StatusCode != 200 || body.String() != "hello" || resp.Header.Get("X-App") != "yes" {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, body.String())
			}
			wantHeaders(t, resp.Header, "fixed", `"fixed";q=2;w=10`, `"fixed";r=`+strconv.Itoa(1-i)+`;t=10`, "2", strconv.Itoa(1-i), "10", "")
			continue
		}
		var r httpapi.CheckResponse
		answer{resp.StatusCode, resp.Header, body.Bytes()}.decode(t, &r)
		want := httpapi.CheckResponse{Policy: "fixed", Limit: 2, ResetAfterMS: 10000, RetryAfterMS: 10000}
		if resp.StatusCode != 429 || r != want || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("request 3: %d %+v", resp.StatusCode, r)
		}
		wantHeaders(t, resp.Header, "fixed", `"fixed";q=2;w=10`, `"fixed";r=0;t=10`, "2", "0", "10", "10")
	}
	if calls != 2 {
		t.Errorf("the handler ran %d times, want 2", calls)
	}
	// The key was the loopback client address.
	if d, _ := e.node.Allow(context.Background(), "fixed", "ip:127.0.0.1", 0); d.Remaining != 0 {
		t.Errorf("key ip:127.0.0.1 has %d remaining, want 0", d.Remaining)
	}
}

func TestMiddlewareHits(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	var calls int
	h := httpapi.Middleware(e.checker, "auth", httpapi.HeaderKey("X-User"), httpapi.MiddlewareOptions{Hits: 4})(hello(&calls))
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-User", "u1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Header().Get("X-RateLimit-Remaining") != "6" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
}

func TestMiddlewareFailures(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	cases := []struct {
		name, policy string
		key          httpapi.KeyFunc
		logged       string
	}{
		{"backend", "auth", httpapi.HeaderKey("X-User"), "connection refused"},
		{"unknown policy", "nope", httpapi.HeaderKey("X-User"), `unknown policy \"nope\"`},
		{"no key", "auth", httpapi.HeaderKey("X-Missing"), "header X-Missing is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, closed := range []bool{false, true} {
				logs.Reset()
				var calls int
				// A fresh middleware each time: its log is capped at a line a second.
				h := httpapi.Middleware(e.checker, c.policy, c.key, httpapi.MiddlewareOptions{FailClosed: closed, Logger: logger})(hello(&calls))
				req := httptest.NewRequest("GET", "/", nil)
				req.Header.Set("X-User", "fail")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if !strings.Contains(logs.String(), c.logged) {
					t.Errorf("closed=%v: log %q lacks %q", closed, logs.String(), c.logged)
				}
				if closed {
					if rec.Code != 503 || calls != 0 || !strings.Contains(rec.Body.String(), `"error":"rate limit check failed"`) {
						t.Errorf("fail closed: %d %q, calls %d", rec.Code, rec.Body, calls)
					}
				} else if rec.Code != 200 || calls != 1 || rec.Header().Get("RateLimit") != "" {
					t.Errorf("fail open: %d, calls %d, headers %v", rec.Code, calls, rec.Header())
				}
			}
		})
	}
}

func TestMiddlewareLogIsCapped(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	var logs bytes.Buffer
	var calls int
	h := httpapi.Middleware(e.checker, "auth", httpapi.HeaderKey("X-User"), httpapi.MiddlewareOptions{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})(hello(&calls))
	for i := 0; i < 100; i++ {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-User", "fail")
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	// The loop may straddle a second boundary of the log cap at most once
	// or so; 100 lines would mean no cap.
	if n := strings.Count(logs.String(), "\n"); n < 1 || n > 3 || calls != 100 {
		t.Errorf("%d log lines, %d calls", n, calls)
	}
}

func TestMiddlewarePanicsWithoutChecker(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	httpapi.Middleware(nil, "auth", httpapi.HeaderKey("X"), httpapi.MiddlewareOptions{})
}

func TestClientIP(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	xff := httpapi.ClientIPConfig{TrustedHeader: "X-Forwarded-For", TrustedProxies: proxies}
	realIP := httpapi.ClientIPConfig{TrustedHeader: "X-Real-IP", TrustedProxies: proxies}
	cases := []struct {
		name    string
		cfg     httpapi.ClientIPConfig
		remote  string
		headers []string // name, value pairs
		want    string   // "" = error
	}{
		{"peer only", httpapi.ClientIPConfig{}, "203.0.113.7:5555", []string{"X-Forwarded-For", "1.1.1.1"}, "203.0.113.7"},
		{"peer v6", httpapi.ClientIPConfig{}, "[2001:db8::1]:443", nil, "2001:db8::1"},
		{"peer mapped v4", httpapi.ClientIPConfig{}, "[::ffff:192.0.2.1]:80", nil, "192.0.2.1"},
		{"peer with zone", httpapi.ClientIPConfig{}, "[fe80::1%eth0]:80", nil, "fe80::1"},
		{"peer without port", httpapi.ClientIPConfig{}, "192.0.2.9", nil, "192.0.2.9"},
		{"bad peer", httpapi.ClientIPConfig{}, "@", nil, ""},
		{"untrusted peer's header ignored", xff, "203.0.113.7:1", []string{"X-Forwarded-For", "1.1.1.1"}, "203.0.113.7"},
		{"trusted peer, no header", xff, "10.0.0.5:1", nil, "10.0.0.5"},
		{"trusted peer, one hop", xff, "10.0.0.5:1", []string{"X-Forwarded-For", "198.51.100.2"}, "198.51.100.2"},
		{"spoofed left hops", xff, "10.0.0.5:1", []string{"X-Forwarded-For", "6.6.6.6, 7.7.7.7,198.51.100.2"}, "198.51.100.2"},
		{"trusted hops skipped", xff, "10.0.0.5:1", []string{"X-Forwarded-For", "6.6.6.6, 198.51.100.2, 10.1.1.1, 10.2.2.2"}, "198.51.100.2"},
		{"several header lines", xff, "10.0.0.5:1", []string{"X-Forwarded-For", "6.6.6.6, 198.51.100.2", "X-Forwarded-For", "10.1.1.1"}, "198.51.100.2"},
		{"all trusted: leftmost", xff, "10.0.0.5:1", []string{"X-Forwarded-For", "10.3.3.3, 10.1.1.1"}, "10.3.3.3"},
		{"hop with port", xff, "10.0.0.5:1", []string{"X-Forwarded-For", "198.51.100.2:8080"}, "198.51.100.2"},
		{"v6 hops", xff, "[fd00::1]:1", []string{"X-Forwarded-For", "2001:db8::7, fd00::2"}, "2001:db8::7"},
		{"bracketed v6 hop", xff, "[fd00::1]:1", []string{"X-Forwarded-For", "[2001:db8::7]"}, "2001:db8::7"},
		{"empty hops skipped", xff, "10.0.0.5:1", []string{"X-Forwarded-For", "198.51.100.2, ,"}, "198.51.100.2"},
		{"garbage as the client", xff, "10.0.0.5:1", []string{"X-Forwarded-For", "1.1.1.1, unknown"}, ""},
		{"garbage left of the client is ignored", xff, "10.0.0.5:1", []string{"X-Forwarded-For", "junk, 198.51.100.2"}, "198.51.100.2"},
		{"x-real-ip", realIP, "10.0.0.5:1", []string{"X-Real-IP", "198.51.100.3"}, "198.51.100.3"},
		{"x-real-ip from untrusted peer", realIP, "198.51.100.9:1", []string{"X-Real-IP", "1.1.1.1"}, "198.51.100.9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = c.remote
			for i := 0; i+1 < len(c.headers); i += 2 {
				r.Header.Add(c.headers[i], c.headers[i+1])
			}
			got, err := httpapi.ClientIP(c.cfg)(r)
			if c.want == "" {
				if !errors.Is(err, httpapi.ErrNoKey) {
					t.Errorf("got %q, %v; want an ErrNoKey error", got, err)
				}
				return
			}
			if want := "ip:" + c.want; err != nil || got != want {
				t.Errorf("got %q, %v; want %q", got, err, want)
			}
		})
	}
}

func TestMiddlewareBehindTrustedProxy(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	var calls int
	key := httpapi.ClientIP(httpapi.ClientIPConfig{
		TrustedHeader:  "X-Forwarded-For",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	srv := httptest.NewServer(httpapi.Middleware(e.checker, "fixed", key, httpapi.MiddlewareOptions{})(hello(&calls)))
	defer srv.Close()
	get := func(xff string) int {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Two clients behind the same proxy have their own counters, however
	// they forge the left of the header.
	got := []int{get("198.51.100.1"), get("1.1.1.1, 198.51.100.1"), get("2.2.2.2, 198.51.100.1"), get("198.51.100.2")}
	if want := []int{200, 200, 429, 200}; !equalInts(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The middleware works with any Checker, cluster.Node among them.
var _ httpapi.Checker = (*cluster.Node)(nil)
