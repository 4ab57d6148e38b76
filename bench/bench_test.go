package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/vibewell/ratelimit/bucket"
)

// The load generator's own cost: each benchmark answers from a handler that
// does no work, so the time is the client's (and the loopback's).

func constServer(b *testing.B) *httptest.Server {
	one := []byte(`{"allowed":true,"policy":"auth","limit":10,"remaining":9,"reset_after_ms":900000,"retry_after_ms":0}` + "\n")
	batch := []byte(`{"results":[` + strings.TrimSuffix(strings.Repeat(strings.TrimSpace(string(one))+",", 100), ",") + "]}\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf [8 << 10]byte
		for {
			if _, err := r.Body.Read(buf[:]); err != nil {
				break
			}
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/check/batch" {
			w.Header().Set("Content-Length", strconv.Itoa(len(batch)))
			_, _ = w.Write(batch)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(one)))
		_, _ = w.Write(one)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// BenchmarkHTTPCheck compares the raw and net/http clients of the HTTP
// target, 16 callers, one check a call.
func BenchmarkHTTPCheck(b *testing.B) {
	srv := constServer(b)
	for _, std := range []bool{false, true} {
		name := "raw"
		if std {
			name = "std"
		}
		b.Run(name, func(b *testing.B) {
			target, err := NewHTTP(HTTPConfig{URLs: []string{srv.URL}, Conns: 64, StdClient: std})
			if err != nil {
				b.Fatal(err)
			}
			defer target.Close(context.Background())
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, err := target.Check(ctx, "auth", "bench-key:12345", 1); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkHTTPBatch100 is one batch of 100 checks a call; ns/op is per
// batch.
func BenchmarkHTTPBatch100(b *testing.B) {
	srv := constServer(b)
	target, err := NewHTTP(HTTPConfig{URLs: []string{srv.URL}, Conns: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer target.Close(context.Background())
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		checks := make([]Check, 100)
		for i := range checks {
			checks[i] = Check{"auth", "bench-key:" + strconv.Itoa(i), 1}
		}
		out := make([]Outcome, 100)
		for pb.Next() {
			if err := target.CheckBatch(ctx, checks, out); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// noopTarget allows every check at no cost.
type noopTarget struct{}

func (noopTarget) Check(context.Context, string, string, int64) (bucket.Decision, error) {
	return bucket.Decision{Allowed: true}, nil
}
func (noopTarget) Close(context.Context) error { return nil }

// BenchmarkHarness is the harness's cost per check (key choice, two clock
// reads, histograms, accuracy accounting) on a target that costs nothing.
func BenchmarkHarness(b *testing.B) {
	p := hourPolicy(1 << 30)
	p.Name = "auth"
	b.ReportAllocs()
	_, err := Run(context.Background(), Config{Target: noopTarget{}, PolicySpec: p, Requests: int64(b.N),
		Concurrency: 2, Keys: 10_000, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
}
