// Package buckettest has what tests of bucket.Store implementations share: a
// manual clock and the conformance suite every Store must pass.
package buckettest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// ManualClock is a bucket.Clock that moves only when told. It is safe for
// concurrent use.
type ManualClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewManualClock returns a clock that reads t.
func NewManualClock(t time.Time) *ManualClock { return &ManualClock{now: t} }

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set moves the clock to t.
func (c *ManualClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// Advance moves the clock forward by d.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Epoch is a fixed start time for scripted tests, aligned to an hour.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// SeedPolicies are the seed deployment's policies, which every store must
// decide exactly.
func SeedPolicies() []bucket.Policy {
	return []bucket.Policy{
		{Name: "default", Limit: 60, Window: time.Minute},
		{Name: "auth", Limit: 10, Window: 15 * time.Minute},
		{Name: "sensitive", Limit: 30, Window: time.Hour},
		{Name: "admin", Limit: 120, Window: time.Minute},
		{Name: "api_limit", Algorithm: bucket.GCRA, Limit: 5, Window: time.Second},
		{Name: "gcra_burst", Algorithm: bucket.GCRA, Limit: 5, Window: time.Second, Burst: 10},
		{Name: "tokens", Algorithm: bucket.TokenBucket, Limit: 20, Window: time.Second, Burst: 5},
		{Name: "fixed", Algorithm: bucket.FixedWindow, Limit: 7, Window: 10 * time.Second},
	}
}

// RunStoreTests runs the conformance suite against stores made by
// newStore, which is called once per subtest and must return an empty store.
func RunStoreTests(t *testing.T, newStore func(t *testing.T) bucket.Store) {
	ctx := context.Background()

	t.Run("LimitThenDeny", func(t *testing.T) {
		for _, p := range SeedPolicies() {
			t.Run(p.Name, func(t *testing.T) {
				s := newStore(t)
				k := bucket.Key{Policy: p.Name, ID: "ip:10.0.0.1"}
				capacity := p.Capacity()
				for i := int64(1); i <= capacity; i++ {
					d := mustTake(t, s, k, p, 1, Epoch)
					if !d.Allowed || d.Remaining != capacity-i || d.Limit != capacity {
						t.Fatalf("check %d: got %+v, want allowed with remaining %d of %d", i, d, capacity-i, capacity)
					}
				}
				d := mustTake(t, s, k, p, 1, Epoch)
				if d.Allowed || d.Remaining != 0 || d.RetryAfter <= 0 {
					t.Fatalf("check over capacity: got %+v, want denied with a retry-after", d)
				}
				d2 := mustTake(t, s, k, p, 1, Epoch.Add(d.RetryAfter))
				if !d2.Allowed {
					t.Fatalf("after retry-after %v: got %+v, want allowed", d.RetryAfter, d2)
				}
			})
		}
	})

	t.Run("KeysAndPoliciesIndependent", func(t *testing.T) {
		s := newStore(t)
		p := bucket.Policy{Name: "a", Limit: 1, Window: time.Minute}
		q := bucket.Policy{Name: "a_b", Limit: 1, Window: time.Minute}
		keys := []struct {
			k bucket.Key
			p bucket.Policy
		}{
			{bucket.Key{Policy: "a", ID: "b_c"}, p},
			{bucket.Key{Policy: "a_b", ID: "c"}, q},
			{bucket.Key{Policy: "a", ID: "x"}, p},
		}
		for _, c := range keys {
			if d := mustTake(t, s, c.k, c.p, 1, Epoch); !d.Allowed {
				t.Fatalf("first check of %+v denied: keys are not independent", c.k)
			}
		}
		for _, c := range keys {
			if d := mustTake(t, s, c.k, c.p, 1, Epoch); d.Allowed {
				t.Fatalf("second check of %+v allowed", c.k)
			}
		}
	})

	t.Run("HitsAndPeek", func(t *testing.T) {
		s := newStore(t)
		p := bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}
		k := bucket.Key{Policy: "p", ID: "k"}
		if d := mustTake(t, s, k, p, 0, Epoch); !d.Allowed || d.Remaining != 10 {
			t.Fatalf("peek of a fresh key: %+v", d)
		}
		if d := mustTake(t, s, k, p, 7, Epoch); !d.Allowed || d.Remaining != 3 {
			t.Fatalf("7 hits: %+v", d)
		}
		if d := mustTake(t, s, k, p, 4, Epoch); d.Allowed || d.Remaining != 3 {
			t.Fatalf("4 more hits over the limit must be denied and consume nothing: %+v", d)
		}
		for range 3 {
			if d := mustTake(t, s, k, p, 0, Epoch); !d.Allowed || d.Remaining != 3 {
				t.Fatalf("peek consumed: %+v", d)
			}
		}
		if d := mustTake(t, s, k, p, 3, Epoch); !d.Allowed || d.Remaining != 0 {
			t.Fatalf("3 hits: %+v", d)
		}
		if d := mustTake(t, s, k, p, 0, Epoch); d.Allowed || d.RetryAfter <= 0 {
			t.Fatalf("peek when full must report denied with retry-after: %+v", d)
		}
		if d := mustTake(t, s, k, p, 11, Epoch.Add(time.Hour)); d.Allowed {
			t.Fatalf("hits above the limit can never pass: %+v", d)
		}
	})

	t.Run("Overrides", func(t *testing.T) {
		s := newStore(t)
		p := bucket.Policy{Name: "p", Limit: 2, Window: time.Minute, Overrides: map[string]int64{"vip": 5}}
		count := func(id string) int {
			n := 0
			for range 10 {
				if mustTake(t, s, bucket.Key{Policy: "p", ID: id}, p, 1, Epoch).Allowed {
					n++
				}
			}
			return n
		}
		if n := count("vip"); n != 5 {
			t.Fatalf("override key allowed %d, want 5", n)
		}
		if n := count("other"); n != 2 {
			t.Fatalf("plain key allowed %d, want 2", n)
		}
	})

	t.Run("WindowExpires", func(t *testing.T) {
		s := newStore(t)
		p := bucket.Policy{Name: "auth", Limit: 10, Window: 15 * time.Minute}
		k := bucket.Key{Policy: "auth", ID: "u"}
		for range 10 {
			mustTake(t, s, k, p, 1, Epoch)
		}
		d := mustTake(t, s, k, p, 1, Epoch)
		if d.Allowed {
			t.Fatal("11th check allowed")
		}
		// All ten hits sit in one slot; they leave the counted set together,
		// no later than window + one slot after they were taken.
		if d.RetryAfter < p.Window || d.RetryAfter > p.Window+p.Window/bucket.Slots {
			t.Fatalf("retry-after %v outside [window, window+slot]", d.RetryAfter)
		}
		if d := mustTake(t, s, k, p, 1, Epoch.Add(d.RetryAfter-time.Millisecond)); d.Allowed {
			t.Fatal("allowed before retry-after")
		}
		if n := s.Sweep(Epoch.Add(d.ResetAfter + time.Second)); n < 0 {
			t.Fatalf("sweep returned %d", n)
		}
		if d := mustTake(t, s, k, p, 0, Epoch.Add(d.ResetAfter+time.Second)); !d.Allowed || d.Remaining != 10 {
			t.Fatalf("after reset: %+v, want full remaining", d)
		}
	})

	t.Run("SameDecisionsAsAlgorithm", func(t *testing.T) {
		// The store decides exactly as the pure algorithm on one state.
		for _, p := range SeedPolicies() {
			t.Run(p.Name, func(t *testing.T) {
				s := newStore(t)
				rng := rand.New(rand.NewPCG(1, uint64(len(p.Name))))
				k := bucket.Key{Policy: p.Name, ID: "k"}
				var ref bucket.State
				now := Epoch.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
				step := p.Window / time.Duration(p.Capacity()+1)
				for i := range 300 {
					now = now.Add(time.Duration(rng.Int64N(int64(2 * step))).Truncate(time.Millisecond))
					hits := int64(rng.IntN(3))
					want := bucket.Take(p, &ref, hits, now)
					got := mustTake(t, s, k, p, hits, now)
					if got != want {
						t.Fatalf("check %d at +%v, hits %d: store %+v, algorithm %+v", i, now.Sub(Epoch), hits, got, want)
					}
				}
			})
		}
	})

	t.Run("ConcurrentExact", func(t *testing.T) {
		s := newStore(t)
		p := bucket.Policy{Name: "p", Limit: 100, Window: time.Hour}
		k := bucket.Key{Policy: "p", ID: "hot"}
		var allowed atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, 1)
		for range 1000 {
			wg.Go(func() {
				d, err := s.Take(ctx, k, p, 1, Epoch)
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
			})
		}
		wg.Wait()
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		if n := allowed.Load(); n != 100 {
			t.Fatalf("allowed %d of 1000 concurrent checks, want exactly 100", n)
		}
	})

	runRefundTests(t, newStore)

	t.Run("ManyKeys", func(t *testing.T) {
		s := newStore(t)
		p := bucket.Policy{Name: "p", Limit: 1, Window: time.Minute}
		for i := range 500 {
			k := bucket.Key{Policy: "p", ID: fmt.Sprintf("k%d", i)}
			if d := mustTake(t, s, k, p, 1, Epoch); !d.Allowed {
				t.Fatalf("key %d denied on first check", i)
			}
		}
	})
}

// refunder returns s as a bucket.Refunder: every store of the project
// gives hits back and resets counters.
func refunder(t *testing.T, s bucket.Store) bucket.Refunder {
	t.Helper()
	r, ok := s.(bucket.Refunder)
	if !ok {
		t.Fatalf("%T is not a bucket.Refunder", s)
	}
	return r
}

func mustRefund(t *testing.T, s bucket.Store, k bucket.Key, p bucket.Policy, hits int64, now time.Time) bucket.Decision {
	t.Helper()
	d, err := refunder(t, s).Refund(context.Background(), k, p, hits, now)
	if err != nil {
		t.Fatalf("refund %+v: %v", k, err)
	}
	return d
}

// runRefundTests is the part of the suite on refunds and resets.
func runRefundTests(t *testing.T, newStore func(t *testing.T) bucket.Store) {
	t.Run("RefundGivesBackNoMore", func(t *testing.T) {
		for _, p := range SeedPolicies() {
			t.Run(p.Name, func(t *testing.T) {
				s := newStore(t)
				k := bucket.Key{Policy: p.Name, ID: "ip:10.0.0.2"}
				capacity := p.Capacity()
				mustTake(t, s, k, p, capacity, Epoch)
				if d := mustTake(t, s, k, p, 1, Epoch); d.Allowed {
					t.Fatalf("over capacity allowed: %+v", d)
				}
				if d := mustRefund(t, s, k, p, 1, Epoch); !d.Allowed || d.Remaining != 1 {
					t.Fatalf("after a refund of 1: %+v, want allowed with 1 remaining", d)
				}
				if d := mustTake(t, s, k, p, 1, Epoch); !d.Allowed {
					t.Fatalf("the refunded hit: %+v", d)
				}
				if d := mustTake(t, s, k, p, 1, Epoch); d.Allowed {
					t.Fatalf("a hit beyond the refund: %+v", d)
				}
				// Never below a fresh counter.
				if d := mustRefund(t, s, k, p, capacity+50, Epoch); d.Remaining != capacity {
					t.Fatalf("refund of more than was taken: %+v, want %d remaining", d, capacity)
				}
				if d := mustTake(t, s, k, p, capacity, Epoch); !d.Allowed {
					t.Fatalf("a full capacity after the refund: %+v", d)
				}
				if d := mustTake(t, s, k, p, 1, Epoch); d.Allowed {
					t.Fatalf("more than a fresh counter admitted after a refund: %+v", d)
				}
			})
		}
	})

	t.Run("Reset", func(t *testing.T) {
		for _, p := range SeedPolicies() {
			t.Run(p.Name, func(t *testing.T) {
				s := newStore(t)
				k := bucket.Key{Policy: p.Name, ID: "user:7"}
				other := bucket.Key{Policy: p.Name, ID: "user:8"}
				mustTake(t, s, k, p, p.Capacity(), Epoch)
				mustTake(t, s, other, p, p.Capacity(), Epoch)
				if d := mustRefund(t, s, k, p, bucket.RefundAll, Epoch); !d.Allowed || d.Remaining != p.Capacity() || d.ResetAfter != 0 {
					t.Fatalf("reset: %+v, want a fresh counter", d)
				}
				if d := mustTake(t, s, k, p, 0, Epoch); d.Remaining != p.Capacity() {
					t.Fatalf("peek after reset: %+v", d)
				}
				if d := mustTake(t, s, other, p, 0, Epoch); d.Remaining != 0 {
					t.Fatalf("a reset touched another key: %+v", d)
				}
				if d := mustRefund(t, s, bucket.Key{Policy: p.Name, ID: "never-seen"}, p, bucket.RefundAll, Epoch); d.Remaining != p.Capacity() {
					t.Fatalf("reset of an unknown key: %+v", d)
				}
			})
		}
	})

	t.Run("RefundSameAsAlgorithm", func(t *testing.T) {
		// Takes and refunds decide exactly as the pure functions on one state.
		for _, p := range SeedPolicies() {
			t.Run(p.Name, func(t *testing.T) {
				s := newStore(t)
				rng := rand.New(rand.NewPCG(2, uint64(len(p.Name))))
				k := bucket.Key{Policy: p.Name, ID: "k"}
				var ref bucket.State
				now := Epoch.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
				step := p.Window / time.Duration(p.Capacity()+1)
				for i := range 200 {
					now = now.Add(time.Duration(rng.Int64N(int64(2 * step))).Truncate(time.Millisecond))
					hits := int64(rng.IntN(4))
					var want, got bucket.Decision
					switch rng.IntN(8) {
					case 0, 1:
						want, got = bucket.Refund(p, &ref, hits, now), mustRefund(t, s, k, p, hits, now)
					case 2:
						want, got = bucket.Refund(p, &ref, bucket.RefundAll, now), mustRefund(t, s, k, p, bucket.RefundAll, now)
					default:
						want, got = bucket.Take(p, &ref, hits, now), mustTake(t, s, k, p, hits, now)
					}
					if got != want {
						t.Fatalf("step %d at +%v, hits %d: store %+v, algorithm %+v", i, now.Sub(Epoch), hits, got, want)
					}
				}
			})
		}
	})
}

func mustTake(t *testing.T, s bucket.Store, k bucket.Key, p bucket.Policy, hits int64, now time.Time) bucket.Decision {
	t.Helper()
	d, err := s.Take(context.Background(), k, p, hits, now)
	if err != nil {
		t.Fatalf("take %+v: %v", k, err)
	}
	return d
}
