package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/vibewell/ratelimit/httpapi"
)

const (
	testClientToken = "client-secret"
	testAdminToken  = "admin-secret"
)

// remaining peeks at a key through the check endpoint.
func (e *env) remaining(t *testing.T, policy, key string) int64 {
	t.Helper()
	var r httpapi.CheckResponse
	e.check(t, `{"policy":"`+policy+`","key":"`+key+`","hits":0}`).decode(t, &r)
	return r.Remaining
}

func TestResetAndRefund(t *testing.T) {
	e := newEnv(t, httpapi.Options{ClientToken: testClientToken, AdminToken: testAdminToken})
	e.check(t, `{"policy":"auth","key":"u1","hits":10}`)
	a := e.do(t, "POST", "/v1/refund", "application/json", `{"policy":"auth","key":"u1","hits":3}`, bearer(testClientToken)...)
	var r httpapi.CheckResponse
	a.decode(t, &r)
	if a.status != 200 || r.Remaining != 3 || !r.Allowed || r.Policy != "auth" {
		t.Fatalf("refund 3: %d %s", a.status, a.body)
	}
	// hits omitted: 1. The admin token is accepted too.
	if a := e.do(t, "POST", "/v1/refund", "", `{"policy":"auth","key":"u1"}`, bearer(testAdminToken)...); a.status != 200 {
		t.Fatalf("refund with the admin token: %d %s", a.status, a.body)
	}
	if n := e.remaining(t, "auth", "u1"); n != 4 {
		t.Fatalf("remaining %d after refunds of 3 and 1, want 4", n)
	}
	if a := e.do(t, "POST", "/v1/reset", "", `{"policy":"auth","key":"u1"}`, bearer(testClientToken)...); a.status != 200 {
		t.Fatalf("reset: %d %s", a.status, a.body)
	}
	if n := e.remaining(t, "auth", "u1"); n != 10 {
		t.Fatalf("remaining %d after reset, want 10", n)
	}

	// Batches, answered in order, a bad item with its own error.
	e.check(t, `{"policy":"auth","key":"b1","hits":10}`)
	e.check(t, `{"policy":"fixed","key":"b2","hits":2}`)
	var br httpapi.BatchResponse
	a = e.do(t, "POST", "/v1/refund/batch", "", `{"refunds":[{"policy":"auth","key":"b1","hits":2},{"policy":"nope","key":"x","hits":1},{"policy":"fixed","key":"b2","hits":0}]}`, bearer(testClientToken)...)
	a.decode(t, &br)
	if a.status != 200 || len(br.Results) != 3 || br.Results[0].Remaining != 2 || br.Results[1].Field != "policy" || br.Results[2].Field != "hits" || br.Results[2].Status != 400 {
		t.Fatalf("refund batch: %d %s", a.status, a.body)
	}
	a = e.do(t, "POST", "/v1/reset/batch", "", `{"resets":[{"policy":"auth","key":"b1"},{"policy":"fixed","key":"b2"}]}`, bearer(testClientToken)...)
	a.decode(t, &br)
	if a.status != 200 || br.Results[0].Remaining != 10 || br.Results[1].Remaining != 2 {
		t.Fatalf("reset batch: %d %s", a.status, a.body)
	}

	for _, tc := range []struct{ path, body, field string }{
		{"/v1/refund", `{"policy":"auth","key":"u1","hits":-1}`, "hits"},
		{"/v1/refund", `{"policy":"auth","key":"u1","hits":1000001}`, "hits"},
		{"/v1/refund", `{"policy":"auth","key":""}`, "key"},
		{"/v1/reset", `{"policy":"auth","key":"u1","hits":1}`, "hits"}, // unknown field
		{"/v1/reset", `{"policy":"nope","key":"u1"}`, "policy"},
	} {
		a := e.do(t, "POST", tc.path, "", tc.body, bearer(testClientToken)...)
		var er httpapi.ErrorResponse
		a.decode(t, &er)
		if a.status != 400 || er.Field != tc.field {
			t.Errorf("%s %s: %d %s, want 400 on %s", tc.path, tc.body, a.status, a.body, tc.field)
		}
	}
}

// TestResetNeedsToken: without the client or admin token, a reset or
// refund is a 403 that changes nothing, and is counted.
func TestResetNeedsToken(t *testing.T) {
	e := newEnv(t, httpapi.Options{ClientToken: testClientToken})
	e.check(t, `{"policy":"auth","key":"v","hits":10}`)
	for _, hdr := range [][]string{nil, bearer("wrong"), {"Authorization", "Basic " + testClientToken}} {
		for _, path := range []string{"/v1/reset", "/v1/refund", "/v1/reset/batch", "/v1/refund/batch"} {
			body := `{"policy":"auth","key":"v"}`
			if strings.HasSuffix(path, "batch") {
				body = `{"resets":[{"policy":"auth","key":"v"}]}`
				if strings.Contains(path, "refund") {
					body = `{"refunds":[{"policy":"auth","key":"v","hits":5}]}`
				}
			}
			if a := e.do(t, "POST", path, "", body, hdr...); a.status != http.StatusForbidden {
				t.Fatalf("%s with %v: %d %s, want 403", path, hdr, a.status, a.body)
			}
		}
	}
	if n := e.remaining(t, "auth", "v"); n != 0 {
		t.Fatalf("a refused reset changed the counter: %d remaining", n)
	}
	if got := counterValue(t, e, "ratelimit_http_refund_refused_total"); got != 12 {
		t.Fatalf("refused counted %v, want 12", got)
	}
	// With no token at all, the endpoints are off.
	off := newEnv(t, httpapi.Options{})
	if a := off.do(t, "POST", "/v1/reset", "", `{"policy":"auth","key":"v"}`); a.status != http.StatusForbidden || !strings.Contains(string(a.body), "client-token") {
		t.Fatalf("reset with no token configured: %d %s", a.status, a.body)
	}
}

// counterValue reads a counter of the env's registry.
func counterValue(t *testing.T, e *env, name string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestClientResetAndRefund(t *testing.T) {
	e := newEnv(t, httpapi.Options{ClientToken: testClientToken})
	ctx := context.Background()
	c := &httpapi.Client{BaseURL: e.srv.URL, Token: testClientToken}
	if _, err := c.Check(ctx, "auth", "c1", 10); err != nil {
		t.Fatal(err)
	}
	if d, err := c.Refund(ctx, "auth", "c1", 4); err != nil || d.Remaining != 4 {
		t.Fatalf("Refund: %+v %v", d, err)
	}
	if d, err := c.Reset(ctx, "auth", "c1"); err != nil || d.Remaining != 10 {
		t.Fatalf("Reset: %+v %v", d, err)
	}
	if res, err := c.RefundBatch(ctx, []httpapi.RefundRequest{{Policy: "auth", Key: "c1", Hits: 1}, {Policy: "auth", Key: "c1", Hits: 0}}); err != nil || res[0].Error != "" || res[1].Status != 400 {
		t.Fatalf("RefundBatch: %+v %v", res, err)
	}
	if res, err := c.ResetBatch(ctx, []httpapi.ResetRequest{{Policy: "auth", Key: "c1"}}); err != nil || res[0].Remaining != 10 {
		t.Fatalf("ResetBatch: %+v %v", res, err)
	}
	anon := &httpapi.Client{BaseURL: e.srv.URL}
	_, err := anon.Reset(ctx, "auth", "c1")
	var se *httpapi.StatusError
	if !errors.As(err, &se) || se.StatusCode != 403 {
		t.Fatalf("Reset without the token: %v, want a 403 StatusError", err)
	}
}
