package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/httpapi"
)

// nginxBinary returns the nginx binary, or skips the test: nginx is not
// part of the test toolchain.
func nginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	t.Skip("nginx is not installed (apt-get install nginx-light): the nginx snippet of deploy/nginx is not tested")
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestNginxAuthRequest runs nginx with deploy/nginx/ratelimit.conf in
// front of a ratelimitd process and a stand-in application: allowed
// requests reach the application with the RateLimit headers, the first one
// over the limit gets 429 with Retry-After, each request is counted once,
// and the application's own 403 reaches the client unchanged.
func TestNginxAuthRequest(t *testing.T) {
	nginx := nginxBinary(t)
	deployDir, err := filepath.Abs("../../deploy/nginx")
	if err != nil {
		t.Fatal(err)
	}
	// api_limit with a capacity of 3 (rate 1 a minute, burst 2), so the
	// test does not depend on timing.
	rl := startServe(t, []string{"--http-addr", "127.0.0.1:0"}, map[string]string{
		"RATE_LIMIT_API_MAX": "1", "RATE_LIMIT_API_WINDOW_MS": "60000", "RATE_LIMIT_API_BURST": "2",
	})

	// As a deployment's health check would: nginx gets the node once it
	// is ready, not as soon as it listens.
	for deadline := time.Now().Add(10 * time.Second); !ready(rl.URL); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("ratelimitd not ready after 10 s")
		}
	}
	dir := t.TempDir()
	upstream, err := os.ReadFile(filepath.Join(deployDir, "ratelimitd-upstream.conf"))
	if err != nil {
		t.Fatal(err)
	}
	upstream = bytes.Replace(upstream, []byte("127.0.0.1:8080"), []byte(rl.Addr), 1)
	if err := os.WriteFile(filepath.Join(dir, "upstream.conf"), upstream, 0o600); err != nil {
		t.Fatal(err)
	}
	front, app := freePort(t), freePort(t)
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/upstream.conf;
    upstream app { server 127.0.0.1:%[3]d; }

    server {
        listen 127.0.0.1:%[3]d;
        location / { return 200 "application\n"; }
        location = /forbidden { return 403 "the application says no\n"; }
    }
    server {
        listen 127.0.0.1:%[2]d;
        include %[4]s/ratelimit.conf;
        location / { proxy_pass http://app; }
    }
}
`, dir, front, app, deployDir)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nginx, "-t", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}

	var nginxOut bytes.Buffer
	cmd := exec.Command(nginx, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath)
	cmd.Stdout, cmd.Stderr = &nginxOut, &nginxOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by pid: the nginx this test started
		<-exited
		if t.Failed() {
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx's error log:\n%s\nratelimitd's log:\n%s", errLog, rl.log)
		}
	})
	frontURL := "http://127.0.0.1:" + strconv.Itoa(front)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(front))
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("nginx exited: %v\n%s", err, nginxOut.String())
		default:
		}
		if time.Now().After(deadline) {
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx not listening after 10s\n%s\n%s", nginxOut.String(), errLog)
		}
		time.Sleep(10 * time.Millisecond)
	}

	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(frontURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	// 1: allowed by the limiter, refused by the application: its 403 is
	// not taken for a rate-limit refusal.
	if resp, body := get("/forbidden"); resp.StatusCode != http.StatusForbidden || body != "the application says no\n" {
		t.Errorf("/forbidden: %d %q; want the application's 403", resp.StatusCode, body)
	}
	// 2 and 3: allowed, with the draft headers of the decision.
	for i, wantRemaining := range []string{"1", "0"} {
		resp, body := get("/")
		if resp.StatusCode != http.StatusOK || body != "application\n" {
			t.Fatalf("request %d: %d %q, want 200 from the application", i+2, resp.StatusCode, body)
		}
		if got := resp.Header.Get("RateLimit-Policy"); got != `"api_limit";q=1;w=60` {
			t.Errorf("request %d: RateLimit-Policy %q", i+2, got)
		}
		if got := resp.Header.Get("RateLimit"); !strings.HasPrefix(got, `"api_limit";r=`+wantRemaining+";t=") {
			t.Errorf("request %d: RateLimit %q, want r=%s", i+2, got, wantRemaining)
		}
		if got := resp.Header.Get("Retry-After"); got != "" {
			t.Errorf("request %d: Retry-After %q on an allowed request", i+2, got)
		}
	}
	// 4: over the limit: 429 with Retry-After.
	resp, body := get("/")
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "rate limit exceeded") {
		t.Fatalf("request 4: %d %q, want 429", resp.StatusCode, body)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Errorf("request 4: Retry-After %q, want 1 to 60 s", resp.Header.Get("Retry-After"))
	}
	if got := resp.Header.Get("RateLimit"); !strings.HasPrefix(got, `"api_limit";r=0;t=`) {
		t.Errorf("request 4: RateLimit %q", got)
	}

	// Each request was checked once: 3 allowed, 1 denied.
	mresp, err := http.Get(rl.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{
		`ratelimit_decisions_total{policy="api_limit",result="allowed"} 3`,
		`ratelimit_decisions_total{policy="api_limit",result="denied"} 1`,
	} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// nginx counted the client under the key httpapi.ClientIP gives the
	// Go middleware for the same client: one client, one counter.
	key, err := httpapi.ClientIP(httpapi.ClientIPConfig{})(&http.Request{RemoteAddr: "127.0.0.1:40000"})
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCmd(nil, "check", "--addr", rl.URL, "--hits", "0", "api_limit", key); code != exitDenied || !strings.Contains(out, "remaining=0") {
		t.Errorf("peek of %q, the middleware's key of 127.0.0.1: exit %d, %q, %q; want the counter nginx used up", key, code, out, errs)
	}
}
