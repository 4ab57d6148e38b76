package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoHandler decides checks by a fixed rule (allowed while hits <= 10) so
// results can be predicted from items, and serves calls: "echo" returns
// the body, "fail" returns an error.
type echoHandler struct {
	// gate, when set, is called for every batch before it is decided.
	gate func(ctx context.Context, items []CheckItem)
}

func expected(it CheckItem) CheckResult {
	r := CheckResult{
		Status:     StatusOK,
		Allowed:    it.Hits <= 10,
		Limit:      10,
		Remaining:  max(10-it.Hits, 0),
		ResetAfter: time.Duration(len(it.Key)) * time.Millisecond,
	}
	if !r.Allowed {
		r.RetryAfter = time.Second
	}
	if it.Policy == "unknown" {
		r = CheckResult{Status: StatusUnknownPolicy}
	}
	return r
}

func (h *echoHandler) HandleChecks(ctx context.Context, items []CheckItem, results []CheckResult) {
	if h.gate != nil {
		h.gate(ctx, items)
	}
	for i, it := range items {
		results[i] = expected(it)
	}
}

func (h *echoHandler) HandleCall(ctx context.Context, method string, body []byte) ([]byte, error) {
	switch method {
	case "echo":
		return body, nil
	case "block":
		<-ctx.Done()
		return nil, ctx.Err()
	default:
		return nil, fmt.Errorf("no method %q", method)
	}
}

// serve starts t serving h and closes it at the end of the test.
func serve(t testing.TB, tr Transport, h Handler) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- tr.Serve(h) }()
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

// newTCP returns a served TCP transport on a free loopback port.
func newTCP(t testing.TB, cfg TCPConfig, h Handler) *TCP {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	tr, err := NewTCP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = &echoHandler{}
	}
	serve(t, tr, h)
	return tr
}

// newClient returns an unserved TCP transport used only to send.
func newClient(t testing.TB, cfg TCPConfig) *TCP {
	t.Helper()
	tr, err := NewTCP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// gate blocks the batches that contain a key with a given prefix until
// released or the transport closes.
type gate struct {
	prefix  string
	mu      sync.Mutex
	entered int
	release chan struct{}
}

func newGate(prefix string) *gate { return &gate{prefix: prefix, release: make(chan struct{})} }

func (g *gate) hold(ctx context.Context, items []CheckItem) {
	for _, it := range items {
		if strings.HasPrefix(it.Key, g.prefix) {
			g.mu.Lock()
			g.entered++
			g.mu.Unlock()
			select {
			case <-g.release:
			case <-ctx.Done():
			}
			return
		}
	}
}

func (g *gate) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.entered
}

func isTimeout(err error) bool {
	return errors.Is(err, ErrTimeout) && errors.Is(err, context.DeadlineExceeded)
}

// countingHandler counts the log records that reach it.
type countingHandler struct {
	mu sync.Mutex
	n  int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(context.Context, slog.Record) error {
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}
