package bench

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
)

// TestHTTPTargetAgainstRealHandler checks the HTTP target's encoder and
// scanner against the real check API: the decisions it reads are the ones
// the node made.
func TestHTTPTargetAgainstRealHandler(t *testing.T) {
	ctx := context.Background()
	p := bucket.Policy{Name: "bench", Limit: 3, Window: time.Hour}
	node, err := cluster.Start(ctx, cluster.Config{Policies: []bucket.Policy{p}})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(ctx)
	h, err := httpapi.NewHandler(httpapi.Options{Checker: node})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	target, err := NewHTTP(HTTPConfig{URLs: []string{srv.URL + "/"}, Conns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close(ctx)
	for i, want := range []bool{true, true, true, false} {
		d, err := target.Check(ctx, "bench", "k", 1)
		if err != nil || d.Allowed != want || d.Limit != 3 || d.Remaining != max(int64(2-i), 0) {
			t.Fatalf("check %d: %+v %v", i, d, err)
		}
		if !want && d.RetryAfter <= 0 {
			t.Errorf("denied without retry-after: %+v", d)
		}
	}
	checks := []Check{{"bench", "b", 2}, {"bench", "b", 2}, {"nope", "b", 1}, {"bench", "", 1}, {"bench", "b", 1}}
	out := make([]Outcome, len(checks))
	if err := target.CheckBatch(ctx, checks, out); err != nil {
		t.Fatal(err)
	}
	if !out[0].Decision.Allowed || out[0].Decision.Remaining != 1 || out[1].Decision.Allowed || !out[4].Decision.Allowed {
		t.Errorf("batch decisions %+v", out)
	}
	if out[2].Err == nil || out[3].Err == nil {
		t.Errorf("bad checks of a batch not reported: %+v %+v", out[2], out[3])
	}
	if _, err := target.Check(ctx, "nope", "k", 1); err == nil || ErrorKind(err)[:5] != "http_" {
		t.Errorf("unknown policy: %v (%s)", err, ErrorKind(err))
	}
	got, err := FetchPolicy(ctx, nil, srv.URL, "bench")
	if err != nil || got.Limit != 3 || got.Window != time.Hour {
		t.Errorf("fetched %+v %v", got, err)
	}
	// A run through the real handler accounts exactly.
	res, err := Run(ctx, Config{Target: target, Policy: "bench", PolicySpec: &p, Keys: 10, Requests: 400,
		Batch: 4, Concurrency: 4, Seed: 12})
	if err != nil {
		t.Fatal(err)
	}
	if a := res.Accuracy; a.OverAdmitted != 0 || a.UnderAdmitted != 0 || a.AllowedHits != 30 || res.Errors != 0 {
		t.Errorf("accuracy %+v errors %v", a, res.ErrorKinds)
	}
}

// TestHTTPRawClient covers the bench's own HTTP/1.1 connections against
// the real handler: chunked answers (big batches), connections the server
// closed while idle (retried once), Connection: close, and the same
// decisions as through net/http's client.
func TestHTTPRawClient(t *testing.T) {
	ctx := context.Background()
	p := bucket.Policy{Name: "bench", Limit: 1_000_000, Window: time.Hour}
	node, err := cluster.Start(ctx, cluster.Config{Policies: []bucket.Policy{p}})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(ctx)
	h, err := httpapi.NewHandler(httpapi.Options{Checker: node})
	if err != nil {
		t.Fatal(err)
	}
	closeNext := atomic.Bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if closeNext.CompareAndSwap(true, false) {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	for _, std := range []bool{false, true} {
		target, err := NewHTTP(HTTPConfig{URLs: []string{srv.URL}, Conns: 2, StdClient: std})
		if err != nil {
			t.Fatal(err)
		}
		if raw := (*target.nodes.Load())[0].pool != nil; raw == std {
			t.Fatalf("std %v: raw pool %v", std, raw)
		}
		// 300 checks answer ~30 KB: chunked.
		checks := make([]Check, 300)
		for i := range checks {
			checks[i] = Check{"bench", "key-" + strconv.Itoa(i%7), 1}
		}
		out := make([]Outcome, len(checks))
		if err := target.CheckBatch(ctx, checks, out); err != nil {
			t.Fatalf("std %v: %v", std, err)
		}
		for i, o := range out {
			if o.Err != nil || !o.Decision.Allowed || o.Decision.Limit != 1_000_000 {
				t.Fatalf("std %v: outcome %d %+v", std, i, o)
			}
		}
		// The server drops every connection: the next check still passes
		// (net/http does not replay a POST, so the std client may fail once).
		srv.CloseClientConnections()
		d, err := target.Check(ctx, "bench", "k", 1)
		if std && err != nil {
			d, err = target.Check(ctx, "bench", "k", 1)
		}
		if err != nil || !d.Allowed {
			t.Fatalf("std %v: after the server closed the idle connection: %+v %v", std, d, err)
		}
		closeNext.Store(true)
		for i := 0; i < 3; i++ {
			if _, err := target.Check(ctx, "bench", "k", 1); err != nil {
				t.Fatalf("std %v: around Connection: close: %v", std, err)
			}
		}
		target.Close(ctx)
	}
	// A node that is down is a connection error of its kind.
	target, err := NewHTTP(HTTPConfig{URLs: []string{"http://" + deadAddr(t)}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := target.Check(ctx, "bench", "k", 1); ErrorKind(err) != "conn_refused" {
		t.Errorf("dead node: kind %q (%v)", ErrorKind(err), err)
	}
	// A cancelled call returns at once.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := target.Check(cctx, "bench", "k", 1); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
