package bench

import (
	"context"
	"net/http/httptest"
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
