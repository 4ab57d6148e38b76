package main

// Tests of `serve --store redis` against a real redis-server: the one that
// scripts/test.sh starts (RATELIMIT_TEST_REDIS_URL), or one of their own on
// a free loopback port.

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startRedis starts a private redis-server on a free loopback port, with
// args (e.g. --requirepass), stopped by pid at the end of the test; it
// returns its redis:// URL. The test is skipped without redis-server.
func startRedis(t *testing.T, args ...string) string {
	t.Helper()
	url, _ := startRedisProc(t, args...)
	return url
}

// startRedisProc is startRedis, and also returns a func that kills the
// server and waits for its end.
func startRedisProc(t *testing.T, args ...string) (url string, kill func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (scripts/test.sh installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	cmd := exec.Command(bin, append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--loglevel", "warning"}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	kill = func() {
		_ = cmd.Process.Kill() // by pid: the server this test started
		<-done
	}
	t.Cleanup(kill)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
			return "redis://127.0.0.1:" + port + "/0", kill
		}
		select {
		case <-done:
			t.Fatalf("redis-server exited at start")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server not listening on %s after 10 s", port)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testRedisURL is the suite's Redis, or a private one.
func testRedisURL(t *testing.T) string {
	if u := os.Getenv("RATELIMIT_TEST_REDIS_URL"); u != "" {
		return u
	}
	return startRedis(t)
}

// TestRedisStoreProcesses: two standalone processes with --store redis
// share one Redis and enforce one limit together, exactly.
func TestRedisStoreProcesses(t *testing.T) {
	const limit = 20
	env := map[string]string{
		"RATELIMIT_STORE":              "redis",
		"REDIS_URL":                    testRedisURL(t),
		"REDIS_TIMEOUT":                "2000",
		"RATE_LIMIT_DEFAULT_MAX":       strconv.Itoa(limit),
		"RATE_LIMIT_DEFAULT_WINDOW_MS": "3600000",
	}
	a := startServe(t, []string{"--http-addr", "127.0.0.1:0", "--standalone"}, env)
	b := startServe(t, []string{"--http-addr", "127.0.0.1:0", "--standalone"}, env)
	if !strings.Contains(a.log.String(), "store=redis") {
		t.Errorf("the listening line does not say store=redis:\n%s", a.log)
	}
	// A key of its own, so that a Redis shared with other tests or runs
	// holds no count of it.
	key := "shared-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	allowed := 0
	for i := 0; i < 3*limit; i++ {
		url := a.URL
		if i%2 == 1 {
			url = b.URL
		}
		r := check(url, "default", key, 1)
		if r.Err != nil || (r.Status != http.StatusOK && r.Status != http.StatusTooManyRequests) {
			t.Fatalf("check %d: %+v", i, r)
		}
		if r.Allowed {
			allowed++
		}
	}
	if allowed != limit {
		t.Errorf("allowed %d of %d checks over two processes, want exactly %d", allowed, 3*limit, limit)
	}
	a.stop()
	b.stop()
}

// TestRedisStoreWrongPassword: a refused password stops start-up with exit
// code 2 and a message that names the variable to check, not the password.
func TestRedisStoreWrongPassword(t *testing.T) {
	url := startRedis(t, "--requirepass", "right-password")
	code, _, stderr := runToEnd(t, 30*time.Second, map[string]string{
		"RATELIMIT_STORE": "redis", "REDIS_URL": url, "REDIS_PASSWORD": "wrong-password", "REDIS_TIMEOUT": "2000",
	}, "serve", "--http-addr", "127.0.0.1:0", "--standalone")
	if code != exitUsage {
		t.Errorf("exit code %d, want 2; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "ratelimitd serve: --store redis:") || !strings.Contains(stderr, "REDIS_PASSWORD") {
		t.Errorf("stderr does not say what failed:\n%s", stderr)
	}
	if strings.Contains(stderr, "wrong-password") || strings.Contains(stderr, "listening") {
		t.Errorf("stderr shows the password or a listening line:\n%s", stderr)
	}

	code, _, stderr = runToEnd(t, 30*time.Second, map[string]string{
		"RATELIMIT_STORE": "redis", "REDIS_URL": "http://" + strings.TrimPrefix(url, "redis://"),
	}, "serve", "--http-addr", "127.0.0.1:0", "--standalone")
	if code != exitUsage || !strings.Contains(stderr, "REDIS_URL") {
		t.Errorf("a wrong URL scheme: exit %d, stderr:\n%s", code, stderr)
	}
}
