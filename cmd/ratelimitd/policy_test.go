package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
)

const policyTestToken = "t0ken"

// policyNode starts a standalone node served by the HTTP API with the
// admin token policyTestToken; opts adjusts the handler's options.
func policyNode(t *testing.T, opts httpapi.Options) (*cluster.Node, string) {
	t.Helper()
	node, err := cluster.Start(context.Background(), cluster.Config{Policies: []bucket.Policy{
		{Name: "auth", Limit: 10, Window: 15 * time.Minute},
		{Name: "vip", Limit: 5, Window: time.Minute, Overrides: map[string]int64{"gold": 50}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Close(context.Background()) })
	opts.Checker, opts.AdminToken = node, policyTestToken
	opts.Status = func() any { return node.Status() }
	h, err := httpapi.NewHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return node, srv.URL
}

func TestPolicyCommand(t *testing.T) {
	node, addr := policyNode(t, httpapi.Options{})
	env := map[string]string{"RATELIMIT_ADMIN_TOKEN": policyTestToken}
	pol := func(args ...string) (int, string, string) {
		return runCmd(env, append(append([]string{"policy"}, args...), "--addr", addr)...)
	}
	want := func(t *testing.T, code int, out, errs string, wantCode int, outPart, errPart string) {
		t.Helper()
		if code != wantCode || !strings.Contains(out, outPart) || !strings.Contains(errs, errPart) {
			t.Fatalf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, out, errs, wantCode, outPart, errPart)
		}
	}

	t.Run("list", func(t *testing.T) {
		code, out, errs := pol("list")
		want(t, code, out, errs, 0, "NAME", "")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME ") {
			t.Fatalf("list: %q", out)
		}
		if f := strings.Fields(lines[2]); strings.Join(f, " ") != "vip sliding_window 5 1m0s 0 local false 1" {
			t.Errorf("list row of vip: %q", f)
		}
		code, out, errs = pol("list", "--json")
		want(t, code, out, errs, 0, `"policies"`, "")
		var pr httpapi.PoliciesResponse
		if err := json.Unmarshal([]byte(out), &pr); err != nil || !reflect.DeepEqual(pr.Policies, node.Policies()) {
			t.Errorf("list --json: %v, %v; want %v", pr.Policies, err, node.Policies())
		}
	})

	t.Run("get", func(t *testing.T) {
		code, out, errs := pol("get", "vip")
		want(t, code, out, errs, 0, `"window_ms": 60000`, "")
		var p bucket.Policy
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatal(err)
		}
		if np, _ := node.Policy("vip"); !reflect.DeepEqual(p, np) {
			t.Errorf("get vip printed %+v, the node holds %+v", p, np)
		}
		code, out, errs = pol("get", "nope")
		want(t, code, out, errs, 1, "", `status 404: unknown policy "nope"`)
		code, out, errs = pol("get")
		want(t, code, out, errs, 2, "", "got 0 arguments; usage: ratelimitd policy get")
	})

	t.Run("set flags", func(t *testing.T) {
		code, out, errs := pol("set", "--name", "login", "--limit", "5", "--window-ms", "60000", "--algorithm", "gcra", "--burst", "2", "--failure-mode", "closed")
		want(t, code, out, errs, 0, `"name": "login"`, "")
		wantP := bucket.Policy{Name: "login", Algorithm: bucket.GCRA, Limit: 5, Window: time.Minute, Burst: 2, FailureMode: bucket.FailClosed}
		if p, _ := node.Policy("login"); !reflect.DeepEqual(p, wantP) {
			t.Fatalf("node holds %+v, want %+v", p, wantP)
		}
		// Changing one field keeps the others, overrides included.
		code, out, errs = pol("set", "--name", "vip", "--limit", "7", "--shadow")
		want(t, code, out, errs, 0, `"limit": 7`, "")
		wantP = bucket.Policy{Name: "vip", Limit: 7, Window: time.Minute, Shadow: true, Overrides: map[string]int64{"gold": 50}}
		if p, _ := node.Policy("vip"); !reflect.DeepEqual(p, wantP) {
			t.Fatalf("node holds %+v, want %+v", p, wantP)
		}
		code, out, errs = pol("set", "--name", "vip", "--shadow=false")
		want(t, code, out, errs, 0, `"shadow": false`, "")

		// Refused by the node: the field is named.
		code, out, errs = pol("set", "--name", "fresh", "--limit", "5")
		want(t, code, out, errs, 1, "", "(field window_ms)")
		code, out, errs = pol("set", "--name", "login", "--algorithm", "sliding_window")
		want(t, code, out, errs, 1, "", "(field burst)")
		if _, ok := node.Policy("fresh"); ok {
			t.Error("an invalid policy was stored")
		}
		// Command-line mistakes.
		code, out, errs = pol("set", "--limit", "5")
		want(t, code, out, errs, 2, "", "want --file FILE or --name NAME")
		code, out, errs = pol("set", "--name", "x", "--algorithm", "leaky")
		want(t, code, out, errs, 2, "", `--algorithm: "leaky" is not one of`)
		code, out, errs = pol("set", "--name", "x", "--window-ms", "0")
		want(t, code, out, errs, 2, "", "--window-ms: must be between 1 and")
	})

	t.Run("set file", func(t *testing.T) {
		dir := t.TempDir()
		yml := filepath.Join(dir, "login.yaml")
		writeFile(t, yml, "name: login\nalgorithm: token_bucket\nlimit: 3\nwindow_ms: 1000\nburst: 1\noverrides:\n  \"user:1\": 30\n")
		code, out, errs := pol("set", "--file", yml)
		want(t, code, out, errs, 0, `"algorithm": "token_bucket"`, "")
		wantP := bucket.Policy{Name: "login", Algorithm: bucket.TokenBucket, Limit: 3, Window: time.Second, Burst: 1, Overrides: map[string]int64{"user:1": 30}}
		if p, _ := node.Policy("login"); !reflect.DeepEqual(p, wantP) {
			t.Fatalf("node holds %+v, want %+v", p, wantP)
		}
		js := filepath.Join(dir, "login.json")
		writeFile(t, js, `{"name":"login","limit":4,"window_ms":2000}`)
		code, out, errs = pol("set", "--file", js)
		want(t, code, out, errs, 0, `"limit": 4`, "")
		if p, _ := node.Policy("login"); p.Limit != 4 || p.Algorithm != bucket.SlidingWindow || p.Overrides != nil {
			t.Errorf("a file replaces the whole policy; node holds %+v", p)
		}

		writeFile(t, js, `{"name":"login","limit":4,"window":2000}`)
		code, out, errs = pol("set", "--file", js)
		want(t, code, out, errs, 2, "", `unknown field "window"`)
		writeFile(t, js, `{"limit":4,"window_ms":2000}`)
		code, out, errs = pol("set", "--file", js)
		want(t, code, out, errs, 2, "", "has no name")
		code, out, errs = pol("set", "--file", js, "--limit", "3")
		want(t, code, out, errs, 2, "", "--file excludes --limit")
		code, out, errs = pol("set", "--file", filepath.Join(dir, "missing.yaml"))
		want(t, code, out, errs, 2, "", "no such file")
	})

	t.Run("overrides", func(t *testing.T) {
		code, out, errs := pol("override", "set", "vip", "user:a/b", "20")
		want(t, code, out, errs, 0, `"user:a/b": 20`, "")
		if p, _ := node.Policy("vip"); p.Overrides["user:a/b"] != 20 {
			t.Fatalf("node holds overrides %v", p.Overrides)
		}
		code, out, errs = pol("override", "delete", "vip", "user:a/b")
		want(t, code, out, errs, 0, `deleted the override of key "user:a/b"`, "")
		if p, _ := node.Policy("vip"); len(p.Overrides) != 1 {
			t.Fatalf("node holds overrides %v", p.Overrides)
		}
		code, out, errs = pol("override", "delete", "vip", "user:a/b")
		want(t, code, out, errs, 1, "", "status 404")
		code, out, errs = pol("override", "set", "nope", "k", "3")
		want(t, code, out, errs, 1, "", "status 404")
		code, out, errs = pol("override", "set", "vip", "k", "many")
		want(t, code, out, errs, 2, "", `LIMIT "many" is not an integer`)
		code, out, errs = pol("override", "set", "vip", "k")
		want(t, code, out, errs, 2, "", "got 2 arguments")
		code, out, errs = pol("override", "frob")
		want(t, code, out, errs, 2, "", "want override set POLICY KEY LIMIT")
	})

	t.Run("delete", func(t *testing.T) {
		code, out, errs := pol("delete", "login")
		want(t, code, out, errs, 0, "deleted policy login", "")
		if _, ok := node.Policy("login"); ok {
			t.Fatal("login still held")
		}
		code, out, errs = pol("delete", "login")
		want(t, code, out, errs, 1, "", "status 404")
	})

	t.Run("token", func(t *testing.T) {
		code, out, errs := runCmd(nil, "policy", "delete", "auth", "--addr", addr)
		want(t, code, out, errs, 1, "", "--token or RATELIMIT_ADMIN_TOKEN")
		code, out, errs = runCmd(map[string]string{"RATELIMIT_ADMIN_TOKEN": "wrong"}, "policy", "list", "--addr", addr)
		want(t, code, out, errs, 1, "", "status 401")
		// The flag wins over the environment; host:port is an address.
		code, out, errs = runCmd(map[string]string{"RATELIMIT_ADMIN_TOKEN": "wrong"},
			"policy", "get", "auth", "--token", policyTestToken, "--addr", strings.TrimPrefix(addr, "http://"))
		want(t, code, out, errs, 0, `"name": "auth"`, "")
		if _, ok := node.Policy("auth"); !ok {
			t.Error("auth deleted without the token")
		}
	})

	t.Run("help", func(t *testing.T) {
		for _, c := range []struct {
			args     []string
			code     int
			out, err string
		}{
			{[]string{"policy", "--help"}, 0, "override set POLICY KEY LIMIT", ""},
			{[]string{"policy"}, 2, "", "Usage: ratelimitd policy COMMAND"},
			{[]string{"policy", "frob"}, 2, "", `unknown command "frob"`},
			{[]string{"policy", "set", "--help"}, 0, "--window-ms int", ""},
			{[]string{"policy", "list", "-h"}, 0, "env RATELIMIT_ADMIN_TOKEN", ""},
			{[]string{"policy", "override", "set", "--help"}, 0, "POLICY KEY LIMIT", ""},
			{[]string{"--help"}, 0, "policy   list, get, set and delete", ""},
		} {
			code, out, errs := runCmd(nil, c.args...)
			want(t, code, out, errs, c.code, c.out, c.err)
		}
	})
}

// failingAdmin cannot commit a change, as a node without a raft leader.
type failingAdmin struct{}

var errNoLeaderTest = errors.New("no raft leader to commit the change")

func (failingAdmin) SetPolicy(context.Context, bucket.Policy) error           { return errNoLeaderTest }
func (failingAdmin) DeletePolicy(context.Context, string) error               { return errNoLeaderTest }
func (failingAdmin) SetOverride(context.Context, string, string, int64) error { return errNoLeaderTest }
func (failingAdmin) DeleteOverride(context.Context, string, string) error     { return errNoLeaderTest }

func TestPolicyCommandErrors(t *testing.T) {
	_, addr := policyNode(t, httpapi.Options{Admin: failingAdmin{}})
	env := map[string]string{"RATELIMIT_ADMIN_TOKEN": policyTestToken}
	code, out, errs := runCmd(env, "policy", "delete", "auth", "--addr", addr)
	if code != 2 || !strings.Contains(errs, "status 503") {
		t.Errorf("a 503: exit %d, stdout %q, stderr %q; want 2", code, out, errs)
	}
	srv := httptest.NewServer(nil)
	gone := srv.URL
	srv.Close()
	code, out, errs = runCmd(env, "policy", "list", "--addr", gone, "--timeout", "2s")
	if code != 2 || !strings.Contains(errs, "ratelimitd policy list:") {
		t.Errorf("no node: exit %d, stdout %q, stderr %q; want 2", code, out, errs)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
