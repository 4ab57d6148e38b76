package bench

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// countingTarget allows each key's first limit+extra hits and denies the
// rest: extra > 0 over-admits by exactly extra hits a key, extra < 0
// under-admits by -extra checks a key.
type countingTarget struct {
	limit int64
	extra int64

	mu    sync.Mutex
	used  map[string]int64
	calls int
}

func newCountingTarget(limit, extra int64) *countingTarget {
	return &countingTarget{limit: limit, extra: extra, used: make(map[string]int64)}
}

func (t *countingTarget) Check(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	if err := ctx.Err(); err != nil {
		return bucket.Decision{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls++
	d := bucket.Decision{Limit: t.limit}
	if t.used[key]+hits <= t.limit+t.extra {
		t.used[key] += hits
		d.Allowed = true
	}
	d.Remaining = max(t.limit-t.used[key], 0)
	return d, nil
}

func (t *countingTarget) Close(context.Context) error { return nil }

// batchingTarget adds CheckBatch to a countingTarget and counts its calls.
type batchingTarget struct {
	*countingTarget
	batches int
}

func (t *batchingTarget) CheckBatch(ctx context.Context, checks []Check, out []Outcome) error {
	t.mu.Lock()
	t.batches++
	t.mu.Unlock()
	for i, c := range checks {
		d, err := t.Check(ctx, c.Policy, c.Key, c.Hits)
		out[i] = Outcome{Decision: d, Err: err}
	}
	return nil
}

// fakeClock is a clock whose SleepUntil moves time forward at once.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) SleepUntil(ctx context.Context, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
}

// fakeAPI is a minimal HTTP check API in front of a countingTarget, with
// /readyz, for the HTTP target and the spawned fake server.
func fakeAPI(t *countingTarget) http.Handler {
	mux := http.NewServeMux()
	type req struct {
		Policy string `json:"policy"`
		Key    string `json:"key"`
		Hits   int64  `json:"hits"`
	}
	type res struct {
		Allowed   bool   `json:"allowed"`
		Policy    string `json:"policy"`
		Limit     int64  `json:"limit"`
		Remaining int64  `json:"remaining"`
		Reset     int64  `json:"reset_after_ms"`
		Retry     int64  `json:"retry_after_ms"`
	}
	answer := func(r req) res {
		d, _ := t.Check(context.Background(), r.Policy, r.Key, r.Hits)
		out := res{Allowed: d.Allowed, Policy: r.Policy, Limit: d.Limit, Remaining: d.Remaining, Reset: 1000}
		if !d.Allowed {
			out.Retry = 1000
		}
		return out
	}
	mux.HandleFunc("POST /v1/check", func(w http.ResponseWriter, r *http.Request) {
		var q req
		if err := json.NewDecoder(r.Body).Decode(&q); err != nil || q.Policy != "t" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"bad request","field":"policy"}`))
			return
		}
		a := answer(q)
		if !a.Allowed {
			w.WriteHeader(http.StatusTooManyRequests)
		}
		_ = json.NewEncoder(w).Encode(a)
	})
	mux.HandleFunc("POST /v1/check/batch", func(w http.ResponseWriter, r *http.Request) {
		var q struct{ Checks []req }
		if err := json.NewDecoder(r.Body).Decode(&q); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		b := []byte(`{"results":[`)
		for i, c := range q.Checks {
			if i > 0 {
				b = append(b, ',')
			}
			if c.Policy != "t" {
				b = append(b, `{"error":"unknown policy","field":"policy","status":400}`...)
				continue
			}
			j, _ := json.Marshal(answer(c))
			b = append(b, j...)
		}
		b = append(b, "]}\n"...)
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"status":"ready"}`))
	})
	mux.HandleFunc("GET /v1/policies", func(w http.ResponseWriter, r *http.Request) {
		p := bucket.Policy{Name: "t", Limit: t.limit, Window: time.Hour}
		_ = json.NewEncoder(w).Encode(map[string]any{"policies": []bucket.Policy{p}})
	})
	mux.HandleFunc("GET /pid", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strconv.Itoa(pid())))
	})
	return mux
}
