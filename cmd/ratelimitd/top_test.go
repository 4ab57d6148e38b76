package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
)

// TestTopAndOwnerCommands runs `top` and `owner` against a node's HTTP API
// after a burst of denied checks.
func TestTopAndOwnerCommands(t *testing.T) {
	node, err := cluster.Start(context.Background(), cluster.Config{Policies: []bucket.Policy{{Name: "auth", Limit: 3, Window: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Close(context.Background()) })
	h, err := httpapi.NewHandler(httpapi.Options{Checker: node, AdminToken: policyTestToken, Operator: nodeOperator{node}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ctx := context.Background()
	for range 10 { // 3 allowed, 7 denied
		node.Allow(ctx, "auth", "ip:203.0.113.7", 1)
	}
	for range 5 { // 3 allowed, 2 denied
		node.Allow(ctx, "auth", "user:42", 1)
	}
	env := map[string]string{"RATELIMIT_ADMIN_TOKEN": policyTestToken}

	code, out, errs := runCmd(env, "top", "--addr", srv.URL, "--window", "1m", "auth")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 6 || !strings.Contains(lines[0], "policy auth, last 1m0s") || !strings.HasPrefix(lines[1], "Denied: 9 total, 2 keys shown") {
		t.Fatalf("top: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if f := strings.Fields(lines[4]); strings.Join(f, " ") != "1 7 0 77.8 ip:203.0.113.7" {
		t.Errorf("first row %q", lines[4])
	}
	if f := strings.Fields(lines[5]); strings.Join(f, " ") != "2 2 0 22.2 user:42" {
		t.Errorf("second row %q", lines[5])
	}

	code, out, _ = runCmd(env, "top", "--addr", srv.URL, "--json", "--n", "1", "auth")
	var top httpapi.TopDeniedResponse
	if err := json.Unmarshal([]byte(out), &top); code != 0 || err != nil || len(top.Keys) != 1 || top.Keys[0].Count != 7 || top.WindowSeconds != 300 {
		t.Fatalf("top --json: exit %d, %v, %+v", code, err, top)
	}

	code, out, errs = runCmd(env, "owner", "--addr", srv.URL, "auth", "ip:203.0.113.7")
	if code != 0 || !strings.Contains(out, "owner      "+node.Name()) || !strings.Contains(out, "counter    0 of 3 left") {
		t.Fatalf("owner: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	// Reading the counter is no check: the denials are still 9.
	if top, _ := node.TopDenied(ctx, "auth", time.Minute, 10); top.Denied != 9 {
		t.Fatalf("after owner: %d denials, want 9", top.Denied)
	}

	for _, tc := range []struct {
		env  map[string]string
		args []string
		code int
		err  string
	}{
		{nil, []string{"top", "--addr", srv.URL, "auth"}, 1, "admin token"},
		{env, []string{"top", "--addr", srv.URL, "nope"}, 1, "unknown policy"},
		{env, []string{"top", "--addr", srv.URL, "--window", "20m", "auth"}, 1, "window"},
		{env, []string{"top", "--addr", srv.URL}, 2, "got 0 arguments"},
		{env, []string{"owner", "--addr", srv.URL, "auth"}, 2, "got 1 arguments"},
	} {
		code, _, errs := runCmd(tc.env, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.err) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, tc.code, tc.err)
		}
	}
}
