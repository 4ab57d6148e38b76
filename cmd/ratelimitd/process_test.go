package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// postCheck sends one check and returns the status, the Retry-After header
// and the decoded body.
func postCheck(t *testing.T, url, policy, key string) (int, http.Header, map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"policy": policy, "key": key, "hits": 1})
	resp, err := http.Post(url+"/v1/check", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("status %d, body %q: %v", resp.StatusCode, b, err)
	}
	return resp.StatusCode, resp.Header, m
}

// TestProcessDefaults runs the binary as a user would, with no flag and
// no variable but the two listen addresses (on free ports: the default
// ones, 8080 and 7946-7948, may be held by `make run`; TestServeConfigDefaults
// checks them): the auth policy allows 10 checks of one key and denies the
// 11th with Retry-After; SIGTERM ends it with exit code 0. The default node
// starts a cluster of its own, its peer and raft listeners beside gossip.
func TestProcessDefaults(t *testing.T) {
	p := startServe(t, nil, map[string]string{"RATELIMIT_HTTP_ADDR": "127.0.0.1:0", "RATELIMIT_GOSSIP_ADDR": "127.0.0.1:0"})
	m := logAddr.FindStringSubmatch(p.log.String())
	if m == nil {
		t.Fatalf("the listening line lacks the cluster addresses; log:\n%s", p.log)
	}
	ports := map[string]bool{}
	for _, a := range m[1:] {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host != "127.0.0.1" || port == "0" {
			t.Errorf("cluster address %q, want one on 127.0.0.1 with its port", a)
		}
		ports[port] = true
	}
	if len(ports) != 3 {
		t.Errorf("gossip, peer and raft share ports: %v", m[1:])
	}
	for i := 1; i <= 11; i++ {
		status, h, body := postCheck(t, p.URL, "auth", "ip:203.0.113.7")
		if i <= 10 {
			if status != http.StatusOK || body["allowed"] != true {
				t.Fatalf("check %d: status %d, body %v; want 200 allowed", i, status, body)
			}
			if got, want := body["remaining"], float64(10-i); got != want {
				t.Errorf("check %d: remaining %v, want %v", i, got, want)
			}
			continue
		}
		if status != http.StatusTooManyRequests || body["allowed"] != false {
			t.Fatalf("check 11: status %d, body %v; want 429 denied", status, body)
		}
		ra, err := strconv.Atoi(h.Get("Retry-After"))
		// 10 checks per 15 min: the first slot's hits leave the counted
		// window 15 min × 9/8 after they were counted at most, rounded up.
		if err != nil || ra < 1 || ra > (15*60*9+7)/8 {
			t.Errorf("Retry-After %q, want whole seconds in [1, %d]", h.Get("Retry-After"), (15*60*9+7)/8)
		}
	}
	p.stop()
	if log := p.log.String(); !strings.Contains(log, "msg=stopped") {
		t.Errorf("no `stopped` line after SIGTERM; log:\n%s", log)
	}
}

// TestProcessSeedVariable: RATE_LIMIT_AUTH_MAX=3 makes the 4th check the
// first denied one; the check subcommand reports it with exit code 1; SIGINT
// ends the server with exit code 0.
func TestProcessSeedVariable(t *testing.T) {
	p := startServe(t, []string{"--http-addr", "127.0.0.1:0"}, map[string]string{"RATE_LIMIT_AUTH_MAX": "3"})
	for i := 1; i <= 3; i++ {
		if status, _, body := postCheck(t, p.URL, "auth", "user:42"); status != http.StatusOK {
			t.Fatalf("check %d: status %d, body %v; want 200", i, status, body)
		}
	}
	code, stdout, stderr := runToEnd(t, 30*time.Second, nil, "check", "--addr", p.URL, "auth", "user:42")
	if code != exitDenied || !strings.HasPrefix(stdout, "denied policy=auth") {
		t.Fatalf("4th check: exit %d, stdout %q, stderr %q; want 1 and denied", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "limit=3 remaining=0") {
		t.Errorf("4th check: %q, want limit=3 remaining=0", stdout)
	}
	if status, h, _ := postCheck(t, p.URL, "auth", "user:42"); status != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Errorf("5th check: status %d, Retry-After %q; want 429 with Retry-After", status, h.Get("Retry-After"))
	}
	p.signal(syscall.SIGINT)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0; log:\n%s", code, p.log)
	}
}

// TestProcessBadVariable: a bad value stops start-up with exit code 2 and
// a message naming the variable.
func TestProcessBadVariable(t *testing.T) {
	code, _, stderr := runToEnd(t, 30*time.Second, map[string]string{"RATE_LIMIT_AUTH_MAX": "ten"},
		"serve", "--http-addr", "127.0.0.1:0")
	if code != exitUsage {
		t.Errorf("exit code %d, want 2", code)
	}
	if want := `RATE_LIMIT_AUTH_MAX: "ten" is not an integer`; !strings.Contains(stderr, want) {
		t.Errorf("stderr %q lacks %q", stderr, want)
	}
	if strings.Contains(stderr, "listening") || strings.Contains(stderr, "panic") {
		t.Errorf("stderr: %q", stderr)
	}
}

func TestProcessVersion(t *testing.T) {
	code, stdout, _ := runToEnd(t, 30*time.Second, nil, "version")
	if code != 0 || !strings.HasPrefix(stdout, "ratelimitd ") || !strings.Contains(stdout, runtime.Version()) {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
}
