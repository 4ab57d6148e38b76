package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/httpapi"
)

// recordingOperator answers from fixed data and records what it was asked.
type recordingOperator struct {
	window time.Duration
	n      int
}

func (o *recordingOperator) TopDenied(ctx context.Context, policy string, window time.Duration, n int) (httpapi.TopDeniedResponse, error) {
	if policy != "auth" {
		return httpapi.TopDeniedResponse{}, fmt.Errorf("op: %w: %q", bucket.ErrUnknownPolicy, policy)
	}
	o.window, o.n = window, n
	return httpapi.TopDeniedResponse{Policy: policy, WindowSeconds: int64(window / time.Second), Keys: []httpapi.DeniedKey{{Key: "ip:1", Count: 3}}}, nil
}

func (o *recordingOperator) Owner(ctx context.Context, policy, key string) (httpapi.OwnerResponse, error) {
	return httpapi.OwnerResponse{Policy: policy, Key: key, Owner: "n1"}, nil
}

func (o *recordingOperator) Overview(ctx context.Context) (httpapi.OverviewResponse, error) {
	return httpapi.OverviewResponse{}, fmt.Errorf("no peers")
}

func TestOperatorEndpoints(t *testing.T) {
	op := &recordingOperator{}
	h, err := httpapi.NewHandler(httpapi.Options{Checker: nopChecker{}, Operator: op, AdminToken: testToken})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, b.String()
	}
	for _, tc := range []struct {
		path, token string
		status      int
		part        string
	}{
		{"/v1/top?policy=auth", "", 401, "missing bearer token"},
		{"/v1/top?policy=auth", "wrong", 401, "wrong bearer token"},
		{"/v1/owner?policy=auth&key=k", "", 401, "missing bearer token"},
		{"/v1/overview", "", 401, "missing bearer token"},
		{"/v1/top?policy=auth", testToken, 200, `"key":"ip:1"`},
		{"/v1/top", testToken, 400, `"field":"policy"`},
		{"/v1/top?policy=nope", testToken, 404, "unknown policy"},
		{"/v1/top?policy=" + strings.Repeat("p", 257), testToken, 400, "longer than 256"},
		{"/v1/owner?key=k&policy=" + strings.Repeat("p", 257), testToken, 400, "longer than 256"},
		{"/v1/top?policy=auth&window=30s", testToken, 400, `"field":"window"`},
		{"/v1/top?policy=auth&window=16m", testToken, 400, `"field":"window"`},
		{"/v1/top?policy=auth&window=x", testToken, 400, `"field":"window"`},
		{"/v1/top?policy=auth&n=0", testToken, 400, `"field":"n"`},
		{"/v1/top?policy=auth&n=101", testToken, 400, `"field":"n"`},
		{"/v1/owner?policy=auth&key=" + url.QueryEscape("user:42"), testToken, 200, `"owner":"n1"`},
		{"/v1/owner?policy=auth", testToken, 400, `"field":"key"`},
		{"/v1/owner?policy=auth&key=" + strings.Repeat("k", httpapi.DefaultMaxKeyLen+1), testToken, 400, `"field":"key"`},
		{"/v1/overview", testToken, 503, "overview failed: no peers"},
	} {
		status, body := get(tc.path, tc.token)
		if status != tc.status || !strings.Contains(body, tc.part) {
			t.Errorf("GET %.60s: %d %s; want %d with %s", tc.path, status, body, tc.status, tc.part)
		}
	}
	if _, _ = get("/v1/top?policy=auth&window=15m&n=3", testToken); op.window != 15*time.Minute || op.n != 3 {
		t.Errorf("operator asked for %v and %d keys, want 15m and 3", op.window, op.n)
	}

	// Without an Operator the endpoints are not there.
	h, _ = httpapi.NewHandler(httpapi.Options{Checker: nopChecker{}})
	srv2 := httptest.NewServer(h)
	defer srv2.Close()
	resp, err := http.Get(srv2.URL + "/v1/top?policy=auth")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("no Operator: status %d, want 404", resp.StatusCode)
	}
}

// nopChecker holds the policy "auth" and allows everything.
type nopChecker struct{}

func (nopChecker) Allow(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	return bucket.Decision{Allowed: true}, nil
}

func (nopChecker) Policy(name string) (bucket.Policy, bool) {
	if name != "auth" {
		return bucket.Policy{}, false
	}
	return bucket.Policy{Name: "auth", Limit: 10, Window: time.Minute}, true
}

func (nopChecker) Policies() []bucket.Policy {
	p, _ := nopChecker{}.Policy("auth")
	return []bucket.Policy{p}
}
