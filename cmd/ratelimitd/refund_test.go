package main

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/httpapi"
)

// TestResetAndRefundProcesses: with --store redis, a reset and a refund
// made through one process (with --client-token) are seen by another that
// shares the Redis; without the token, a reset is a 403 and changes
// nothing.
func TestResetAndRefundProcesses(t *testing.T) {
	const limit, token = 10, "test-client-token"
	env := map[string]string{
		"RATELIMIT_STORE":              "redis",
		"REDIS_URL":                    testRedisURL(t),
		"REDIS_TIMEOUT":                "2000",
		"RATE_LIMIT_DEFAULT_MAX":       strconv.Itoa(limit),
		"RATE_LIMIT_DEFAULT_WINDOW_MS": "3600000",
		"RATELIMIT_CLIENT_TOKEN":       token,
	}
	a := startServe(t, []string{"--http-addr", "127.0.0.1:0", "--standalone"}, env)
	b := startServe(t, []string{"--http-addr", "127.0.0.1:0", "--standalone"}, env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca := &httpapi.Client{BaseURL: a.URL, Token: token}
	cb := &httpapi.Client{BaseURL: b.URL}
	key := "reset-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if d, err := cb.Check(ctx, "default", key, limit); err != nil || !d.Allowed {
		t.Fatalf("using up: %+v %v", d, err)
	}
	if _, err := cb.Reset(ctx, "default", key); !isStatus(err, 403) {
		t.Fatalf("reset without the token: %v, want 403", err)
	}
	if d, _ := cb.Check(ctx, "default", key, 0); d.Remaining != 0 {
		t.Fatalf("a refused reset changed the counter: %+v", d)
	}
	if d, err := ca.Refund(ctx, "default", key, 3); err != nil || d.Remaining != 3 {
		t.Fatalf("refund: %+v %v", d, err)
	}
	if d, _ := cb.Check(ctx, "default", key, 0); d.Remaining != 3 {
		t.Fatalf("the other process sees %d remaining after the refund, want 3", d.Remaining)
	}
	if d, err := ca.Reset(ctx, "default", key); err != nil || d.Remaining != limit {
		t.Fatalf("reset: %+v %v", d, err)
	}
	if d, _ := cb.Check(ctx, "default", key, limit); !d.Allowed {
		t.Fatalf("the other process denies a full limit after the reset: %+v", d)
	}
	a.stop()
	b.stop()
}

func isStatus(err error, code int) bool {
	var se *httpapi.StatusError
	return errors.As(err, &se) && se.StatusCode == code
}
