package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// serveInProcess runs `run serve args...` in this process until the test
// ends, and returns the base URL and the log.
func serveInProcess(t *testing.T, env map[string]string, args ...string) (string, *logWatcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := newLogWatcher()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, append([]string{"serve"}, freePorts(args, env)...), func(k string) string { return env[k] }, io.Discard, log)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case c := <-code:
			if c != 0 {
				t.Errorf("serve returned %d after cancel, want 0; log:\n%s", c, log)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("serve still running 10s after cancel; log:\n%s", log)
		}
	})
	select {
	case <-log.listening:
	case c := <-code:
		t.Fatalf("serve returned %d before listening; log:\n%s", c, log)
	case <-time.After(10 * time.Second):
		t.Fatalf("no listening line; log:\n%s", log)
	}
	return "http://" + log.Addr(), log
}

// runCmd runs `run args...` to its end with a fake environment.
func runCmd(env map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), serveCommand(args, env), func(k string) string { return env[k] }, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRunCommands(t *testing.T) {
	tests := []struct {
		args       []string
		code       int
		out, err   string // substrings of stdout and stderr
		noOut      bool
		wantStderr bool
	}{
		{args: nil, code: 2, err: "Usage: ratelimitd COMMAND"},
		{args: []string{"frobnicate"}, code: 2, err: `unknown command "frobnicate"`},
		{args: []string{"--help"}, code: 0, out: "serve    run a node"},
		{args: []string{"help"}, code: 0, out: "check    ask a node"},
		{args: []string{"serve", "--help"}, code: 0, out: "RATE_LIMIT_SENSITIVE_WINDOW_MS"},
		{args: []string{"serve", "-h"}, code: 0, out: "--shutdown-timeout duration"},
		{args: []string{"check", "--help"}, code: 0, out: "0 allowed, 1 denied"},
		{args: []string{"check", "auth"}, code: 2, err: "want POLICY KEY, got 1 arguments"},
		{args: []string{"check", "--hits", "-1", "auth", "k"}, code: 2, err: "--hits: must be at least 0, got -1"},
		{args: []string{"version"}, code: 0, out: runtime.Version()},
		{args: []string{"version", "extra"}, code: 2, err: `takes no arguments, got "extra"`},
		{args: []string{"serve", "--nope"}, code: 2, err: "ratelimitd serve: unknown flag --nope (--help lists the flags)"},
		{args: []string{"policy", "override", "--help"}, code: 0, out: "override set POLICY KEY LIMIT"},
		{args: []string{"bench", "--help"}, code: 0, out: "  --concurrency int\n      Concurrent callers"},
		{args: []string{"bench", "--nope"}, code: 2, err: "ratelimitd bench: unknown flag --nope (--help lists the flags)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errs := runCmd(nil, tt.args...)
			if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errs, tt.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, out, errs, tt.code, tt.out, tt.err)
			}
		})
	}
}

func TestRunServeBadConfig(t *testing.T) {
	code, _, errs := runCmd(map[string]string{"SECURITY_ENABLE_RATE_LIMITING": "nah"}, "serve", "--http-addr", "127.0.0.1:0")
	if code != 2 || !strings.Contains(errs, `SECURITY_ENABLE_RATE_LIMITING: "nah" is not a boolean`) {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

// TestRunServeStartFailures: every start-up failure exits 2 with the
// setting named, like a bad value: a busy HTTP or gossip port, an address
// that is not this host's, a data directory that cannot be made.
func TestRunServeStartFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-addr", busy}, "--http-addr: listen on " + busy},
		{[]string{"--http-addr", "192.0.2.1:0"}, "--http-addr: listen on 192.0.2.1:0"},
		{[]string{"--gossip-addr", busy}, "--gossip-addr " + busy},
		{[]string{"--data-dir", filepath.Join(file, "sub")}, "--data-dir: "},
	} {
		code, out, errs := runCmd(nil, append([]string{"serve"}, tc.args...)...)
		if code != exitUsage || !strings.Contains("\n"+errs, "\nratelimitd serve: ") || !strings.Contains(errs, tc.want) || strings.Contains(errs, "serve failed") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out, errs, tc.want)
		}
	}
}

// TestRunServeAndCheck serves in process and drives it with the check
// subcommand and plain HTTP: exit codes, the env-set limit, shadow mode
// off, the policy file, the metrics registry and the JSON log.
func TestRunServeAndCheck(t *testing.T) {
	dir := t.TempDir()
	pfile := filepath.Join(dir, "policies.yaml")
	if err := os.WriteFile(pfile, []byte("policies:\n  - {name: login, limit: 2, window_ms: 60000}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	url, log := serveInProcess(t,
		map[string]string{"RATE_LIMIT_AUTH_MAX": "1", "SECURITY_ENABLE_RATE_LIMITING": "true", "RATELIMIT_POLICIES": pfile},
		"--http-addr", "127.0.0.1:0", "--log-format", "json", "--data-dir", data, "--node-name", "n1")

	check := func(args ...string) (int, string, string) {
		return runCmd(nil, append([]string{"check", "--addr", url}, args...)...)
	}
	if code, out, errs := check("auth", "ip:1"); code != 0 || !strings.HasPrefix(out, `allowed policy=auth key="ip:1" limit=1 remaining=0`) {
		t.Errorf("1st: exit %d, %q, %q", code, out, errs)
	}
	if code, out, _ := check("auth", "ip:1"); code != 1 || !strings.HasPrefix(out, "denied policy=auth") || strings.Contains(out, "retry_after=0s") {
		t.Errorf("2nd: exit %d, %q; want denied with a retry_after", code, out)
	}
	if code, out, _ := check("--hits", "0", "login", "k"); code != 0 || !strings.Contains(out, "limit=2 remaining=2") {
		t.Errorf("peek: exit %d, %q", code, out)
	}
	if code, out, errs := runCmd(nil, "check", "--addr", strings.TrimPrefix(url, "http://"), "--hits=0", "login", "k"); code != 0 {
		t.Errorf("--addr host:port: exit %d, %q, %q", code, out, errs)
	}
	if code, _, errs := check("nope", "k"); code != 2 || !strings.Contains(errs, "404") && !strings.Contains(errs, "unknown policy") {
		t.Errorf("unknown policy: exit %d, stderr %q", code, errs)
	}
	if code, _, errs := runCmd(nil, "check", "--addr", "http://127.0.0.1:1", "--timeout", "2s", "auth", "k"); code != 2 || errs == "" {
		t.Errorf("no server: exit %d, stderr %q", code, errs)
	}

	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total", `ratelimit_decisions_total{policy="auth",result="denied"} 1`} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	if fi, err := os.Stat(data); err != nil || !fi.IsDir() {
		t.Errorf("data dir not created: %v", err)
	}
	var first map[string]any
	line, _, _ := strings.Cut(log.String(), "\n")
	if err := json.Unmarshal([]byte(line), &first); err != nil {
		t.Errorf("log is not JSON: %q", line)
	}
	if !strings.Contains(log.String(), `"node":"n1"`) {
		t.Errorf("log lacks the node name:\n%s", log)
	}
}

// TestRunServeShadow: SECURITY_ENABLE_RATE_LIMITING=false allows over the
// limit; SECURITY_LOG_RATE_LIMIT_EVENTS=true logs the over-limit check.
func TestRunServeShadow(t *testing.T) {
	url, log := serveInProcess(t,
		map[string]string{"RATE_LIMIT_AUTH_MAX": "1", "SECURITY_ENABLE_RATE_LIMITING": "false", "SECURITY_LOG_RATE_LIMIT_EVENTS": "true"},
		"--http-addr", "127.0.0.1:0")
	for i := 0; i < 3; i++ {
		if code, out, errs := runCmd(nil, "check", "--addr", url, "auth", "k"); code != 0 {
			t.Fatalf("check %d in shadow mode: exit %d, %q, %q", i, code, out, errs)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), "rate limit exceeded") {
		if time.Now().After(deadline) {
			t.Fatalf("no denial logged; log:\n%s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestVersionText(t *testing.T) {
	bi := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/vibewell/ratelimit", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-11-26T06:00:00Z"}, {Key: "vcs.modified", Value: "true"},
		},
	}
	got := versionText(bi, true)
	want := "ratelimitd v1.2.3\nmodule github.com/vibewell/ratelimit\nrevision abc123 (modified) from 2026-11-26T06:00:00Z\n" +
		"built with " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if got := versionText(nil, false); !strings.HasPrefix(got, "ratelimitd unknown\nmodule github.com/vibewell/ratelimit\nrevision unknown") {
		t.Errorf("without build info: %q", got)
	}
}

// startRun runs `run serve args...` in process and returns its address,
// log, the cancel that stands for SIGTERM, and a channel closed when run has
// returned, with its exit code in *code.
func startRun(t *testing.T, args ...string) (addr string, log *logWatcher, cancel context.CancelFunc, done <-chan struct{}, code *int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log = newLogWatcher()
	d := make(chan struct{})
	code = new(int)
	go func() {
		*code = run(ctx, append([]string{"serve"}, freePorts(args, nil)...), func(string) string { return "" }, io.Discard, log)
		close(d)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-d:
		case <-time.After(10 * time.Second):
			t.Errorf("serve still running 10s after cancel")
		}
	})
	select {
	case <-log.listening:
	case <-d:
		t.Fatalf("serve returned %d before listening; log:\n%s", *code, log)
	case <-time.After(10 * time.Second):
		t.Fatalf("no listening line; log:\n%s", log)
	}
	return log.Addr(), log, cancel, d, code
}

// startBody sends the head of a check request whose body is n bytes, with
// Expect: 100-continue, and waits for the 100 Continue: then the server is
// in the handler, reading the body.
func startBody(t *testing.T, addr string, n int) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	head := "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
		"Expect: 100-continue\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n"
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("want 100 Continue, got %v, %v", resp, err)
	}
	return conn, r
}

// TestShutdownDrains: a request in flight when the shutdown starts is
// answered, new connections are refused, and serve returns 0.
func TestShutdownDrains(t *testing.T) {
	addr, log, cancel, done, code := startRun(t, "--http-addr", "127.0.0.1:0", "--shutdown-timeout", "10s")
	body := `{"policy":"auth","key":"drain","hits":1}`
	conn, r := startBody(t, addr, len(body))

	cancel() // SIGTERM
	deadline := time.Now().Add(5 * time.Second)
	for { // the listener closes at once
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections 5s after the shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-done:
		t.Fatalf("serve returned %d with a request in flight", *code)
	default:
	}

	if _, err := conn.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("the in-flight request got no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("in-flight request: status %d, want 200", resp.StatusCode)
	}
	select {
	case <-done:
		if *code != 0 {
			t.Errorf("serve returned %d, want 0", *code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after the last request")
	}
	if strings.Contains(log.String(), "cut") {
		t.Errorf("requests were cut:\n%s", log)
	}
}

// TestShutdownTimeout: a request that does not finish within
// --shutdown-timeout is cut, and serve still returns 0, in about that time.
func TestShutdownTimeout(t *testing.T) {
	addr, log, cancel, done, code := startRun(t, "--http-addr", "127.0.0.1:0", "--shutdown-timeout", "200ms")
	startBody(t, addr, 100) // and never send the body
	start := time.Now()
	cancel()
	select {
	case <-done:
		if *code != 0 {
			t.Errorf("serve returned %d, want 0", *code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return 10s after a 200ms shutdown timeout")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("returned after %v, before the shutdown timeout", d)
	}
	if !strings.Contains(log.String(), "in-flight requests cut at the shutdown timeout") {
		t.Errorf("no warning about the cut request:\n%s", log)
	}
}
