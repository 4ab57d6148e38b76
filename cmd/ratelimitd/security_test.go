package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rssBytes is the resident memory of process pid.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// metricValue reads one sample of the node's /metrics.
func metricValue(t *testing.T, url, sample string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// Attack 6: many connections announce a large body and send a little of
// it. The node must hold only what arrived, close each connection at its
// read deadline, and answer other checks meanwhile.
func TestSecurityPartialBodies(t *testing.T) {
	const (
		conns = 1000
		bound = 96 << 20 // resident memory the attack may add: about 100 KB a connection
	)
	p := startServe(t, []string{"--standalone", "--http-addr", "127.0.0.1:0", "--http-read-timeout", "3s"}, nil)
	check := func() int {
		resp, err := http.Post(p.URL+"/v1/check", "application/json", strings.NewReader(`{"policy":"default","key":"ok"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := check(); code != 200 {
		t.Fatalf("check before the attack: %d", code)
	}
	before := rssBytes(t, p.cmd.Process.Pid)

	head := "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
	part := head + `{"policy":"default","key":"` + strings.Repeat("a", 900)
	open := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	start := time.Now()
	for range conns {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatalf("dial after %d connections: %v", len(open), err)
		}
		open = append(open, c)
		if _, err := io.WriteString(c, part); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	during := rssBytes(t, p.cmd.Process.Pid)
	if code := check(); code != 200 {
		t.Errorf("check during the attack: %d", code)
	}
	t.Logf("%d partial bodies: resident memory %d MB → %d MB", conns, before>>20, during>>20)
	if during-before > bound {
		t.Errorf("resident memory grew by %d MB, bound %d MB", (during-before)>>20, bound>>20)
	}

	// Every connection is answered 408 or closed by the read deadline.
	var wg sync.WaitGroup
	var mu sync.Mutex
	stillOpen := 0
	for _, c := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			b, err := io.ReadAll(c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				mu.Lock()
				stillOpen++
				mu.Unlock()
				return
			}
			if len(b) > 0 && !bytes.HasPrefix(b, []byte("HTTP/1.1 408")) {
				t.Errorf("answer to a partial body: %.60q", b)
			}
		}()
	}
	wg.Wait()
	t.Logf("all %d connections closed %v after the attack began", conns, time.Since(start).Round(time.Millisecond))
	if stillOpen > 0 {
		t.Errorf("%d connections still open 20 s after their read deadline", stillOpen)
	}
	if code := check(); code != 200 {
		t.Errorf("check after the attack: %d", code)
	}
	if got := metricValue(t, p.URL, `ratelimit_http_read_timeouts_total`); got < conns {
		t.Errorf("read timeouts counted: %v, want %d", got, conns)
	}
	if got := metricValue(t, p.URL, `ratelimit_http_bodies_refused_total{limit="read_timeout"}`); got < conns {
		t.Errorf("bodies refused by the read timeout: %v, want %d", got, conns)
	}
	p.stop()
}
