package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
	"github.com/vibewell/ratelimit/internal/testcluster"
)

const testToken = "s3cret-token"

// newAdminEnv is newEnv with the admin API on (token testToken) and the
// node's status on /v1/cluster.
func newAdminEnv(t testing.TB, opts httpapi.Options) *env {
	t.Helper()
	opts.AdminToken = testToken
	var e *env
	opts.Status = func() any { return e.node.Status() }
	e = newEnv(t, opts)
	return e
}

func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }

// wantError asserts an ErrorResponse answer with status and field.
func wantError(t *testing.T, a answer, status int, field, msgPart string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d; body %s", a.status, status, a.body)
	}
	var er httpapi.ErrorResponse
	a.decode(t, &er)
	if er.Field != field {
		t.Errorf("field %q, want %q; body %s", er.Field, field, a.body)
	}
	if !strings.Contains(er.Error, msgPart) {
		t.Errorf("error %q, want it to contain %q", er.Error, msgPart)
	}
}

// adminRequests is one request of each admin endpoint, writes with a valid
// body.
var adminRequests = []struct{ method, path, body string }{
	{"GET", "/v1/policies", ""},
	{"GET", "/v1/policies/auth", ""},
	{"PUT", "/v1/policies/login", `{"limit":5,"window_ms":60000}`},
	{"DELETE", "/v1/policies/fixed", ""},
	{"PUT", "/v1/policies/vip/overrides/user:1", `{"limit":9}`},
	{"DELETE", "/v1/policies/vip/overrides/gold", ""},
	{"GET", "/v1/cluster", ""},
}

func TestAdminOffWithoutToken(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	for _, r := range adminRequests {
		a := e.do(t, r.method, r.path, "application/json", r.body, bearer("anything")...)
		switch {
		case r.method != "GET":
			wantError(t, a, http.StatusForbidden, "", "admin API disabled: set --admin-token / RATELIMIT_ADMIN_TOKEN")
		case r.path == "/v1/cluster": // no Options.Status
			wantError(t, a, http.StatusNotFound, "", "no cluster status")
		case a.status != http.StatusOK:
			t.Errorf("%s %s without a token: status %d, want 200 (reads stay public); body %s", r.method, r.path, a.status, a.body)
		}
	}
	// Nothing changed.
	if _, ok := e.node.Policy("fixed"); !ok {
		t.Error("policy fixed deleted while the admin API is off")
	}
	if _, ok := e.node.Policy("login"); ok {
		t.Error("policy login created while the admin API is off")
	}
}

func TestAdminTokenRequired(t *testing.T) {
	e := newAdminEnv(t, httpapi.Options{})
	for _, r := range adminRequests {
		for _, hdr := range [][]string{
			nil,
			bearer("wrong"),
			bearer(testToken + "x"),
			bearer(""),
			{"Authorization", "Basic " + testToken},
			{"Authorization", testToken},
		} {
			a := e.do(t, r.method, r.path, "application/json", r.body, hdr...)
			if a.status != http.StatusUnauthorized {
				t.Errorf("%s %s with %q: status %d, want 401; body %s", r.method, r.path, hdr, a.status, a.body)
				continue
			}
			if got := a.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("%s %s: WWW-Authenticate %q, want Bearer", r.method, r.path, got)
			}
			var er httpapi.ErrorResponse
			a.decode(t, &er)
		}
	}
	if _, ok := e.node.Policy("fixed"); !ok {
		t.Error("policy fixed deleted without the token")
	}
	// The right token, with the scheme in any case, opens every endpoint.
	for _, r := range adminRequests {
		a := e.do(t, r.method, r.path, "application/json", r.body, "Authorization", "bearer "+testToken)
		if a.status/100 != 2 {
			t.Errorf("%s %s with the token: status %d; body %s", r.method, r.path, a.status, a.body)
		}
	}
	// The check API needs no token.
	if a := e.check(t, `{"policy":"auth","key":"k"}`); a.status != http.StatusOK {
		t.Errorf("check with the admin API on: status %d, body %s", a.status, a.body)
	}
}

func TestAdminPolicyLifecycle(t *testing.T) {
	e := newAdminEnv(t, httpapi.Options{})
	ctx := context.Background()
	c := &httpapi.Client{BaseURL: e.srv.URL, Token: testToken}

	want := bucket.Policy{Name: "login", Algorithm: bucket.GCRA, Limit: 5, Window: time.Minute, Burst: 2,
		FailureMode: bucket.FailClosed, Shadow: true, Overrides: map[string]int64{"user:1": 50}}
	got, err := c.SetPolicy(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("SetPolicy returned %+v, want %+v", got, want)
	}
	if p, ok := e.node.Policy("login"); !ok || !reflect.DeepEqual(p, want) {
		t.Fatalf("node holds %+v (%v), want %+v", p, ok, want)
	}
	if got, err = c.GetPolicy(ctx, "login"); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("GetPolicy = %+v, %v; want %+v", got, err, want)
	}
	ps, err := c.Policies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !containsPolicy(ps, "login") {
		t.Errorf("Policies lacks login: %v", ps)
	}

	// A lowered limit applies to an existing counter from the next check.
	for range 3 {
		if d, err := c.Check(ctx, "auth", "k", 1); err != nil || !d.Allowed {
			t.Fatalf("check: %+v, %v", d, err)
		}
	}
	auth, _ := e.node.Policy("auth")
	auth.Limit = 3
	if _, err := c.SetPolicy(ctx, auth); err != nil {
		t.Fatal(err)
	}
	if d, err := c.Check(ctx, "auth", "k", 1); err != nil || d.Allowed || d.Limit != 3 {
		t.Fatalf("check after lowering the limit to 3 with 3 hits taken: %+v, %v; want denied", d, err)
	}

	// The name may be left out of the body; a different one is refused.
	a := e.do(t, "PUT", "/v1/policies/nameless", "application/json", `{"limit":7,"window_ms":1000}`, bearer(testToken)...)
	if a.status != http.StatusOK {
		t.Fatalf("PUT without a name: %d %s", a.status, a.body)
	}
	var stored bucket.Policy
	a.decode(t, &stored)
	if stored.Name != "nameless" || stored.Limit != 7 || stored.Window != time.Second {
		t.Errorf("PUT without a name stored %+v", stored)
	}
	a = e.do(t, "PUT", "/v1/policies/nameless", "application/json", `{"name":"other","limit":7,"window_ms":1000}`, bearer(testToken)...)
	wantError(t, a, http.StatusBadRequest, "name", `"other"`)
	if _, ok := e.node.Policy("other"); ok {
		t.Error("policy other created by a PUT on /v1/policies/nameless")
	}

	if err := c.DeletePolicy(ctx, "login"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.node.Policy("login"); ok {
		t.Error("login still held after DeletePolicy")
	}
	for _, f := range []func() error{
		func() error { _, err := c.GetPolicy(ctx, "login"); return err },
		func() error { return c.DeletePolicy(ctx, "login") },
	} {
		var se *httpapi.StatusError
		if err := f(); !errors.As(err, &se) || se.StatusCode != http.StatusNotFound {
			t.Errorf("after delete: %v, want a 404 StatusError", err)
		}
	}
	a = e.do(t, "DELETE", "/v1/policies/login", "", "", bearer(testToken)...)
	wantError(t, a, http.StatusNotFound, "", `unknown policy "login"`)
}

func containsPolicy(ps []bucket.Policy, name string) bool {
	for _, p := range ps {
		if p.Name == name {
			return true
		}
	}
	return false
}

func TestAdminBadPolicyBodies(t *testing.T) {
	e := newAdminEnv(t, httpapi.Options{MaxBodyBytes: 512})
	for _, c := range []struct {
		body, field, msg string
		status           int
	}{
		{`{"limit":5,"window_ms":0}`, "window_ms", "at least 1 ms", 400},
		{`{"limit":5,"window_ms":-1}`, "window_ms", "", 400},
		{`{"limit":5,"window_ms":"60s"}`, "window_ms", "want an integer, got string", 400},
		{`{"limit":5}`, "window_ms", "", 400},
		{`{"limit":-1,"window_ms":1000}`, "limit", "", 400},
		{`{"limit":"ten","window_ms":1000}`, "limit", "want an integer", 400},
		{`{"limit":5,"window_ms":1000,"algorithm":"leaky"}`, "algorithm", "leaky", 400},
		{`{"limit":5,"window_ms":1000,"failure_mode":"maybe"}`, "failure_mode", "maybe", 400},
		{`{"limit":5,"window_ms":1000,"shadow":"yes"}`, "shadow", "true or false", 400},
		{`{"limit":5,"window_ms":1000,"burst":3}`, "burst", "only gcra and token_bucket", 400},
		{`{"limit":5,"window_ms":1000,"overrides":{"":3}}`, "overrides", "empty key", 400},
		{`{"limit":5,"window_ms":1000,"overrides":{"k":"x"}}`, "overrides", "want an integer", 400},
		{`{"limit":5,"window_ms":1000,"limt":6}`, "limt", `unknown field "limt"`, 400},
		{`{"limit":5,"window_ms":1000,"Limit":6}`, "Limit", `case-sensitive, want "limit"`, 400},
		{`{"limit":5,"window_ms":1000,"limit":6}`, "limit", `given twice`, 400},
		{`{"limit":5,"window_ms":1000,"algorithm":1}`, "algorithm", "want a string, got number", 400},
		{`{"algorithm":"gcra","limit":5,"window_ms":1000,"burst":9223372036854775807}`, "burst", "overflows", 400},
		{`{"limit":5,"window_ms":1000`, "", "malformed JSON", 400},
		{`{"limit":5,"window_ms":1000} {}`, "", "data after the object", 400},
		{``, "", "empty body", 400},
		{`[1]`, "", "want a JSON object", 400},
		{` null `, "", "want a JSON object, got null", 400},
		{`{"limit":5,"window_ms":1000,"overrides":{"` + strings.Repeat("k", 600) + `":1}}`, "", "larger than 512 bytes", 413},
	} {
		a := e.do(t, "PUT", "/v1/policies/newpol", "application/json", c.body, bearer(testToken)...)
		t.Run(c.body[:min(len(c.body), 40)], func(t *testing.T) { wantError(t, a, c.status, c.field, c.msg) })
	}
	if _, ok := e.node.Policy("newpol"); ok {
		t.Error("an invalid body created the policy")
	}
	// An invalid name in the path is named too.
	a := e.do(t, "PUT", "/v1/policies/bad%20name", "application/json", `{"limit":5,"window_ms":1000}`, bearer(testToken)...)
	wantError(t, a, http.StatusBadRequest, "name", "")
}

func TestAdminOverrides(t *testing.T) {
	e := newAdminEnv(t, httpapi.Options{})
	ctx := context.Background()
	c := &httpapi.Client{BaseURL: e.srv.URL, Token: testToken}
	// A key with a slash, a space, a percent sign and a question mark
	// survives path escaping.
	key := "user:a/b c%?d"
	p, err := c.SetOverride(ctx, "vip", key, 2)
	if err != nil {
		t.Fatal(err)
	}
	if p.Overrides[key] != 2 || p.Overrides["gold"] != 50 {
		t.Fatalf("SetOverride returned overrides %v", p.Overrides)
	}
	if np, _ := e.node.Policy("vip"); np.Overrides[key] != 2 {
		t.Fatalf("node holds overrides %v", np.Overrides)
	}
	if d, err := c.Check(ctx, "vip", key, 1); err != nil || d.Limit != 2 {
		t.Fatalf("check of the overridden key: %+v, %v; want limit 2", d, err)
	}
	if err := c.DeleteOverride(ctx, "vip", key); err != nil {
		t.Fatal(err)
	}
	if np, _ := e.node.Policy("vip"); len(np.Overrides) != 1 {
		t.Fatalf("after DeleteOverride the node holds overrides %v", np.Overrides)
	}
	if d, err := c.Check(ctx, "vip", key, 1); err != nil || d.Limit != 5 {
		t.Fatalf("check after DeleteOverride: %+v, %v; want the policy's limit 5", d, err)
	}

	var se *httpapi.StatusError
	if err := c.DeleteOverride(ctx, "vip", key); !errors.As(err, &se) || se.StatusCode != 404 || !strings.Contains(se.Message, "no override") {
		t.Errorf("DeleteOverride of an unknown override: %v, want 404", err)
	}
	if _, err := c.SetOverride(ctx, "nope", "k", 1); !errors.As(err, &se) || se.StatusCode != 404 {
		t.Errorf("SetOverride under an unknown policy: %v, want 404", err)
	}
	if err := c.DeleteOverride(ctx, "nope", "k"); !errors.As(err, &se) || se.StatusCode != 404 {
		t.Errorf("DeleteOverride under an unknown policy: %v, want 404", err)
	}

	for _, b := range []struct{ body, field, msg string }{
		{`{}`, "limit", "limit is required"},
		{`{"limit":"x"}`, "limit", "want an integer"},
		{`{"limit":1,"max":2}`, "max", "unknown field"},
		{`{"limit":-3}`, "overrides", ""},
		{`nope`, "", "malformed JSON"},
		{`null`, "", "got null"},
	} {
		a := e.do(t, "PUT", "/v1/policies/vip/overrides/k", "application/json", b.body, bearer(testToken)...)
		wantError(t, a, http.StatusBadRequest, b.field, b.msg)
	}
	long := strings.Repeat("k", httpapi.DefaultMaxKeyLen+1)
	a := e.do(t, "PUT", "/v1/policies/vip/overrides/"+long, "application/json", `{"limit":1}`, bearer(testToken)...)
	wantError(t, a, http.StatusBadRequest, "key", "longer than")
}

func TestAdminMethodNotAllowed(t *testing.T) {
	e := newAdminEnv(t, httpapi.Options{})
	for _, c := range []struct{ method, path, allow string }{
		{"POST", "/v1/policies/auth", "GET, HEAD, PUT, DELETE"},
		{"PATCH", "/v1/policies/auth", "GET, HEAD, PUT, DELETE"},
		{"GET", "/v1/policies/vip/overrides/gold", "PUT, DELETE"},
		{"PUT", "/v1/policies", "GET, HEAD"},
		{"DELETE", "/v1/cluster", "GET, HEAD"},
	} {
		a := e.do(t, c.method, c.path, "application/json", `{}`, bearer(testToken)...)
		wantError(t, a, http.StatusMethodNotAllowed, "", "not allowed")
		if got := a.header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
}

func TestAdminClusterStatus(t *testing.T) {
	e := newAdminEnv(t, httpapi.Options{})
	c := &httpapi.Client{BaseURL: e.srv.URL, Token: testToken}
	raw, err := c.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var st cluster.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if want := e.node.Status(); st.Node != want.Node || len(st.Members) != 1 || !st.Members[0].Self {
		t.Errorf("status %+v, want the node's %+v", st, want)
	}
	if _, err := (&httpapi.Client{BaseURL: e.srv.URL}).Cluster(context.Background()); !errors.Is(err, httpapi.ErrStatus) {
		t.Errorf("Cluster without the token: %v, want a StatusError", err)
	}
}

// stuckAdmin is a PolicyAdmin that cannot commit: it fails, or waits for
// its deadline, as a node without a raft leader does.
type stuckAdmin struct{ wait bool }

var errNoLeader = errors.New("no raft leader to commit the change")

func (a stuckAdmin) fail(ctx context.Context) error {
	if a.wait {
		<-ctx.Done()
		return fmt.Errorf("%w: %w", errNoLeader, ctx.Err())
	}
	return errNoLeader
}
func (a stuckAdmin) SetPolicy(ctx context.Context, _ bucket.Policy) error        { return a.fail(ctx) }
func (a stuckAdmin) DeletePolicy(ctx context.Context, _ string) error            { return a.fail(ctx) }
func (a stuckAdmin) SetOverride(ctx context.Context, _, _ string, _ int64) error { return a.fail(ctx) }
func (a stuckAdmin) DeleteOverride(ctx context.Context, _, _ string) error       { return a.fail(ctx) }

func TestAdminUnavailable(t *testing.T) {
	for _, wait := range []bool{false, true} {
		e := newAdminEnv(t, httpapi.Options{Admin: stuckAdmin{wait: wait}, AdminTimeout: 50 * time.Millisecond})
		for _, r := range adminRequests {
			if r.method == "GET" {
				continue
			}
			start := time.Now()
			a := e.do(t, r.method, r.path, "application/json", r.body, bearer(testToken)...)
			wantError(t, a, http.StatusServiceUnavailable, "", "no raft leader")
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("%s %s took %v with a 50ms AdminTimeout", r.method, r.path, el)
			}
		}
	}
}

// TestAdminThreeNodes serves each node of a 3-node raft cluster over HTTP:
// a change on a follower's API is visible on every node's API.
func TestAdminThreeNodes(t *testing.T) {
	tc := testcluster.Start(t, 3, testcluster.Options{Policies: testPolicies()})
	clients := make([]*httpapi.Client, 3)
	for i := range clients {
		node := tc.Node(i)
		h, err := httpapi.NewHandler(httpapi.Options{
			Checker: node, AdminToken: testToken, Status: func() any { return node.Status() },
		})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		clients[i] = &httpapi.Client{BaseURL: srv.URL, Token: testToken, HTTPClient: srv.Client()}
	}
	ctx := context.Background()
	leader := tc.Leader()
	follower, other := (leader+1)%3, (leader+2)%3

	want := bucket.Policy{Name: "login", Limit: 4, Window: time.Minute}
	if _, err := clients[follower].SetPolicy(ctx, want); err != nil {
		t.Fatal(err)
	}
	// The follower answered once the change was applied on it.
	if p, err := clients[follower].GetPolicy(ctx, "login"); err != nil || !reflect.DeepEqual(p, want) {
		t.Fatalf("follower: %+v, %v", p, err)
	}
	waitAll(t, clients, func(c *httpapi.Client) error {
		p, err := c.GetPolicy(ctx, "login")
		if err == nil && !reflect.DeepEqual(p, want) {
			err = fmt.Errorf("got %+v", p)
		}
		return err
	})

	if _, err := clients[other].SetOverride(ctx, "login", "user:7", 40); err != nil {
		t.Fatal(err)
	}
	waitAll(t, clients, func(c *httpapi.Client) error {
		p, err := c.GetPolicy(ctx, "login")
		if err == nil && p.Overrides["user:7"] != 40 {
			err = fmt.Errorf("overrides %v", p.Overrides)
		}
		return err
	})

	if err := clients[other].DeletePolicy(ctx, "login"); err != nil {
		t.Fatal(err)
	}
	waitAll(t, clients, func(c *httpapi.Client) error {
		_, err := c.GetPolicy(ctx, "login")
		var se *httpapi.StatusError
		if errors.As(err, &se) && se.StatusCode == 404 {
			return nil
		}
		return fmt.Errorf("GetPolicy after delete: %v", err)
	})

	raw, err := clients[follower].Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var st cluster.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if st.Raft == nil || st.Raft.Leader == "" || len(st.Raft.Voters) != 3 || len(st.Members) != 3 {
		t.Errorf("follower's /v1/cluster: %s", raw)
	}
}

// waitAll polls f on every client until it returns nil, for up to 10 s.
func waitAll(t *testing.T, clients []*httpapi.Client, f func(*httpapi.Client) error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i, c := range clients {
		for {
			err := f(c)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: %v", i, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// readOnlyChecker is a Checker that cannot change its policy table.
type readOnlyChecker struct{ httpapi.Checker }

func TestAdminWithoutPolicyAdmin(t *testing.T) {
	e := newEnv(t, httpapi.Options{})
	h, err := httpapi.NewHandler(httpapi.Options{Checker: readOnlyChecker{e.node}, AdminToken: testToken})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range adminRequests {
		req := httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		want := http.StatusOK
		switch {
		case r.method != "GET":
			want = http.StatusNotImplemented
		case r.path == "/v1/cluster":
			want = http.StatusNotFound
		}
		if rec.Code != want {
			t.Errorf("%s %s: status %d, want %d; body %s", r.method, r.path, rec.Code, want, rec.Body)
		}
	}
}
