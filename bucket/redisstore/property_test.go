package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/buckettest"
)

// maxExact mirrors the bound that bucket.Policy.Validate puts on
// capacity × interval.
const maxExact = 1 << 53

// genLimit draws a limit for p (Window and Algorithm set) that Validate
// accepts, small or anywhere in the valid range.
func genLimit(t *rapid.T, p *bucket.Policy, label string) int64 {
	w := p.Window.Microseconds()
	hi := int64(bucket.MaxCount)
	if p.Algorithm == bucket.GCRA || p.Algorithm == bucket.TokenBucket {
		hi = w // at most one per microsecond
	}
	return rapid.OneOf(rapid.Int64Range(1, min(hi, 20)), rapid.Int64Range(1, hi)).Draw(t, label)
}

// genPolicy draws a valid policy of the given algorithm: any window from
// 1ms to MaxWindow, limits small and huge, bursts up to the exactness bound,
// and sometimes an override for the key id "vip".
func genPolicy(t *rapid.T, name string, alg bucket.Algorithm, vip string) bucket.Policy {
	windowMS := rapid.OneOf(
		rapid.Int64Range(1, 2000),
		rapid.Int64Range(1, bucket.MaxWindow.Milliseconds()),
		rapid.SampledFrom([]int64{1, 8, 1000, 60_000, 900_000, 3_600_000, bucket.MaxWindow.Milliseconds()}),
	).Draw(t, "window_ms")
	p := bucket.Policy{Name: name, Algorithm: alg, Window: time.Duration(windowMS) * time.Millisecond}
	p.Limit = genLimit(t, &p, "limit")
	if alg == bucket.GCRA || alg == bucket.TokenBucket {
		interval := p.Window.Microseconds() / p.Limit
		// Burst also bounds the override limits, which share it.
		room := maxExact/interval - p.Limit
		if room > 0 {
			p.Burst = rapid.OneOf(rapid.Int64Range(0, min(room, 10)), rapid.Int64Range(0, room)).Draw(t, "burst")
		}
	}
	if rapid.Bool().Draw(t, "has_override") {
		l := genLimit(t, &p, "override")
		p.Overrides = map[string]int64{vip: l}
		if p.Validate() != nil {
			p.Overrides = nil
		}
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("generated an invalid policy: %v", err)
	}
	return p
}

var propertyRun atomic.Int64

// TestSameDecisionsAsMemory: over random policies (every algorithm,
// bursts, overrides, window changes) and random schedules of (time step,
// key, hits), single checks, batches, refunds and resets, the Redis store
// decides exactly as the memory store, whose decisions are bucket.Take's
// and bucket.Refund's.
func TestSameDecisionsAsMemory(t *testing.T) {
	s := newTestStore(t, testURL(t))
	for alg := bucket.SlidingWindow; alg <= bucket.FixedWindow; alg++ {
		t.Run(alg.String(), func(t *testing.T) { checkSameDecisions(t, s, alg) })
	}
}

func checkSameDecisions(t *testing.T, s *Store, alg bucket.Algorithm) {
	ctx := context.Background()
	rapid.Check(t, func(t *rapid.T) {
		run := strconv.FormatInt(propertyRun.Add(1), 10)
		ids := []string{run + ":a", run + ":b", run + ":vip"}
		p := genPolicy(t, "prop", alg, ids[2])
		mem := bucket.NewMemoryStore(bucket.MemoryConfig{})

		start := rapid.OneOf(
			rapid.Map(rapid.Int64Range(0, int64(366*24*time.Hour)), func(d int64) time.Time { return buckettest.Epoch.Add(time.Duration(d)) }),
			rapid.Map(rapid.Int64Range(-int64(time.Hour), int64(time.Hour)), func(d int64) time.Time { return time.Unix(0, d) }),
		).Draw(t, "start")
		now := start
		steps := rapid.IntRange(1, 120).Draw(t, "steps")
		for i := range steps {
			w := int64(p.Window)
			dt := rapid.OneOf(
				rapid.Just(int64(0)),
				rapid.Int64Range(0, 3000),             // below a microsecond or so
				rapid.Int64Range(0, w/int64(p.Limit)), // about one interval
				rapid.Int64Range(0, w/bucket.Slots),   // about one slot
				rapid.Int64Range(max(0, w/bucket.Slots-2000), w/bucket.Slots+2000),
				rapid.Int64Range(0, w/4),
				rapid.Int64Range(0, 2*w),
				rapid.Int64Range(-w/8, 0), // the clock goes back
			).Draw(t, "dt")
			now = now.Add(time.Duration(dt))
			if rapid.IntRange(0, 30).Draw(t, "change") == 0 {
				// The policy is edited: same algorithm, new window, limit or burst.
				p = genPolicy(t, "prop", alg, ids[2])
			}
			capacity := p.Capacity()
			genHits := rapid.OneOf(
				rapid.Int64Range(0, 3),
				rapid.Int64Range(0, capacity+1),
				rapid.SampledFrom([]int64{-1, capacity, capacity + 1, 1 << 40, 1<<62 + 1}),
			)
			if rapid.IntRange(0, 5).Draw(t, "batch") == 0 {
				n := rapid.IntRange(1, 6).Draw(t, "batch_size")
				checks := make([]bucket.Check, n)
				want := make([]bucket.Decision, n)
				for j := range checks {
					checks[j] = bucket.Check{
						Key:    bucket.Key{Policy: p.Name, ID: rapid.SampledFrom(ids).Draw(t, "id")},
						Policy: p, Hits: genHits.Draw(t, "hits"),
					}
					want[j], _ = mem.Take(ctx, checks[j].Key, p, checks[j].Hits, now)
				}
				got := make([]bucket.Decision, n)
				if err := s.TakeBatch(ctx, checks, now, got); err != nil {
					t.Fatalf("step %d: batch: %v", i, err)
				}
				for j := range checks {
					if got[j] != want[j] {
						t.Fatalf("step %d, batch check %d (%s, %d hits) at %s under %s:\nredis  %+v\nmemory %+v",
							i, j, checks[j].Key.ID, checks[j].Hits, now.Format(time.RFC3339Nano), describe(p), got[j], want[j])
					}
				}
				continue
			}
			k := bucket.Key{Policy: p.Name, ID: rapid.SampledFrom(ids).Draw(t, "id")}
			hits := genHits.Draw(t, "hits")
			if kind := rapid.IntRange(0, 7).Draw(t, "refund"); kind <= 1 {
				// A refund (or, one time in two, a reset) decides as the
				// memory store's too.
				if kind == 1 {
					hits = bucket.RefundAll
				}
				want, _ := mem.Refund(ctx, k, p, hits, now)
				got, err := s.Refund(ctx, k, p, hits, now)
				if err != nil {
					t.Fatalf("step %d: refund: %v", i, err)
				}
				if got != want {
					t.Fatalf("step %d (refund %s, %d hits) at %s under %s:\nredis  %+v\nmemory %+v",
						i, k.ID, hits, now.Format(time.RFC3339Nano), describe(p), got, want)
				}
				continue
			}
			want, _ := mem.Take(ctx, k, p, hits, now)
			got, err := s.Take(ctx, k, p, hits, now)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if got != want {
				t.Fatalf("step %d (%s, %d hits) at %s under %s:\nredis  %+v\nmemory %+v",
					i, k.ID, hits, now.Format(time.RFC3339Nano), describe(p), got, want)
			}
		}
	})
}

func describe(p bucket.Policy) string {
	return fmt.Sprintf("%s limit %d per %v burst %d overrides %v", p.Algorithm, p.Limit, p.Window, p.Burst, p.Overrides)
}
