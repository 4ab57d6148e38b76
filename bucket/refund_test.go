package bucket_test

import (
	"context"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/buckettest"
)

func TestRefundTable(t *testing.T) {
	at := buckettest.Epoch.Add(1234 * time.Millisecond)
	tests := []struct {
		name          string
		p             bucket.Policy
		take, refund  int64
		wantRemaining int64
	}{
		{"sliding all back", bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}, 10, 10, 10},
		{"sliding some back", bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}, 10, 3, 3},
		{"sliding more than taken", bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}, 4, 100, 10},
		{"sliding nothing", bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}, 4, 0, 6},
		{"fixed some back", bucket.Policy{Name: "p", Algorithm: bucket.FixedWindow, Limit: 7, Window: 10 * time.Second}, 7, 2, 2},
		{"fixed more than taken", bucket.Policy{Name: "p", Algorithm: bucket.FixedWindow, Limit: 7, Window: 10 * time.Second}, 3, 9, 7},
		{"gcra back", bucket.Policy{Name: "p", Algorithm: bucket.GCRA, Limit: 5, Window: time.Second, Burst: 10}, 11, 4, 4},
		{"gcra more than taken", bucket.Policy{Name: "p", Algorithm: bucket.GCRA, Limit: 5, Window: time.Second, Burst: 10}, 3, 50, 11},
		{"tokens back", bucket.Policy{Name: "p", Algorithm: bucket.TokenBucket, Limit: 20, Window: time.Second, Burst: 5}, 25, 5, 5},
		{"tokens all back", bucket.Policy{Name: "p", Algorithm: bucket.TokenBucket, Limit: 20, Window: time.Second, Burst: 5}, 25, bucket.RefundAll, 25},
		{"sliding reset", bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}, 10, bucket.RefundAll, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s bucket.State
			if d := bucket.Take(tc.p, &s, tc.take, at); !d.Allowed {
				t.Fatalf("take %d: %+v", tc.take, d)
			}
			d := bucket.Refund(tc.p, &s, tc.refund, at)
			if d.Remaining != tc.wantRemaining {
				t.Fatalf("after refund %d of %d taken: remaining %d, want %d (%+v)", tc.refund, tc.take, d.Remaining, tc.wantRemaining, d)
			}
			// The refunded room is usable now, and no more.
			for i := range tc.wantRemaining {
				if !bucket.Take(tc.p, &s, 1, at).Allowed {
					t.Fatalf("hit %d of %d refunded denied", i+1, tc.wantRemaining)
				}
			}
			if bucket.Take(tc.p, &s, 1, at).Allowed {
				t.Fatal("a hit beyond the refund allowed")
			}
		})
	}
}

// A sliding window refunds its newest hits first: the room given back is
// the room the refunded hits took, not the room older hits will free.
func TestRefundSlidingNewestFirst(t *testing.T) {
	p := bucket.Policy{Name: "p", Limit: 4, Window: 80 * time.Second} // 10 s slots
	var s bucket.State
	at := buckettest.Epoch
	bucket.Take(p, &s, 2, at)
	bucket.Take(p, &s, 2, at.Add(30*time.Second))
	bucket.Refund(p, &s, 2, at.Add(30*time.Second))
	// The two hits left are the old ones: they leave at 90 s, so at 90 s a
	// full limit passes.
	if d := bucket.Take(p, &s, 0, at.Add(89*time.Second)); d.Remaining != 2 {
		t.Fatalf("before the old hits leave: remaining %d, want 2", d.Remaining)
	}
	if d := bucket.Take(p, &s, 4, at.Add(90*time.Second)); !d.Allowed {
		t.Fatalf("once the old hits left: %+v, want a full limit allowed", d)
	}
}

// Refunding a fresh counter leaves it fresh (a refund never goes below a
// fresh counter), and a counter refunded to nothing is idle, so a store may
// drop it.
func TestRefundFreshAndIdle(t *testing.T) {
	for _, p := range buckettest.SeedPolicies() {
		var s bucket.State
		at := buckettest.Epoch.Add(500 * time.Millisecond)
		if d := bucket.Refund(p, &s, 5, at); d.Remaining != p.Capacity() || !d.Allowed {
			t.Errorf("%s: refund of a fresh counter: %+v", p.Name, d)
		}
		bucket.Take(p, &s, 1, at)
		bucket.Refund(p, &s, 1, at)
		if !s.IdleAt(at.Add(time.Second)) {
			t.Errorf("%s: a counter refunded to nothing is not idle a second later: %+v", p.Name, s)
		}
	}
}

func TestMemoryStoreRefundDropsCounter(t *testing.T) {
	ctx := context.Background()
	s := bucket.NewMemoryStore(bucket.MemoryConfig{})
	p := bucket.Policy{Name: "auth", Limit: 10, Window: 15 * time.Minute}
	k := bucket.Key{Policy: "auth", ID: "ip:1"}
	at := buckettest.Epoch
	for range 10 {
		_, _ = s.Take(ctx, k, p, 1, at)
	}
	if d, _ := s.Refund(ctx, k, p, bucket.RefundAll, at); d.Remaining != 10 {
		t.Fatalf("reset: %+v", d)
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("a reset counter is still held (%d counters)", n)
	}
	if d, _ := s.Refund(ctx, bucket.Key{Policy: "auth", ID: "never"}, p, 3, at); d.Remaining != 10 || s.Len() != 0 {
		t.Fatalf("refund of an unknown key: %+v, %d counters", d, s.Len())
	}
}

// drawOps draws a run of takes and refunds.
type op struct {
	step   time.Duration
	hits   int64
	refund bool
}

func drawOps(t *rapid.T, p bucket.Policy, label string) []op {
	capacity := p.Capacity()
	maxStep := int64(p.Window) / max(1, capacity) * 2 / int64(time.Millisecond)
	out := make([]op, rapid.IntRange(1, 80).Draw(t, label+"_n"))
	for i := range out {
		out[i] = op{
			step:   time.Duration(rapid.Int64Range(0, maxStep).Draw(t, label+"_step")) * time.Millisecond,
			hits:   rapid.Int64Range(0, min(capacity, 6)).Draw(t, label+"_hits"),
			refund: rapid.IntRange(0, 3).Draw(t, label+"_kind") == 0,
		}
	}
	return out
}

func run(p bucket.Policy, s *bucket.State, at time.Time, ops []op, record func(bucket.Decision)) time.Time {
	for _, o := range ops {
		at = at.Add(o.step)
		var d bucket.Decision
		if o.refund {
			d = bucket.Refund(p, s, o.hits, at)
		} else {
			d = bucket.Take(p, s, o.hits, at)
		}
		if record != nil {
			record(d)
		}
	}
	return at
}

// TestPropertyRefundNeverBeyondFresh: whatever mix of takes and refunds
// came before, a run of single hits that follows admits no more than it
// would from a fresh counter; and at one instant a refund of h raises
// remaining by at most h, never above the capacity.
func TestPropertyRefundNeverBeyondFresh(t *testing.T) {
	policies := buckettest.SeedPolicies()
	rapid.Check(t, func(t *rapid.T) {
		p := policies[rapid.IntRange(0, len(policies)-1).Draw(t, "policy")]
		var s bucket.State
		at := run(p, &s, buckettest.Epoch, drawOps(t, p, "before"), nil)
		h := rapid.Int64Range(0, p.Capacity()+2).Draw(t, "refund")
		before := bucket.Take(p, &s, 0, at)
		after := bucket.Refund(p, &s, h, at)
		if after.Remaining < before.Remaining || after.Remaining > min(p.Capacity(), before.Remaining+h) {
			t.Fatalf("refund %d: remaining %d → %d, capacity %d", h, before.Remaining, after.Remaining, p.Capacity())
		}
		var fresh bucket.State
		var nState, nFresh int
		for _, o := range drawOps(t, p, "after") {
			at = at.Add(o.step)
			if bucket.Take(p, &s, 1, at).Allowed {
				nState++
			}
			if bucket.Take(p, &fresh, 1, at).Allowed {
				nFresh++
			}
			if nState > nFresh {
				t.Fatalf("a refunded counter admitted %d, a fresh one %d", nState, nFresh)
			}
		}
	})
}

// TestPropertyRefundRestores: a refund of the hits a take just admitted,
// at the same time, leaves every later decision as if neither happened.
func TestPropertyRefundRestores(t *testing.T) {
	policies := buckettest.SeedPolicies()
	rapid.Check(t, func(t *rapid.T) {
		p := policies[rapid.IntRange(0, len(policies)-1).Draw(t, "policy")]
		var s bucket.State
		at := run(p, &s, buckettest.Epoch, drawOps(t, p, "before"), nil)
		at = at.Add(time.Duration(rapid.Int64Range(0, 5000).Draw(t, "gap_ms")) * time.Millisecond)
		if d := bucket.Take(p, &s, 0, at); d.Remaining == 0 {
			at = at.Add(d.ResetAfter) // room for the take
		}
		u := s
		room := bucket.Take(p, &u, 0, at).Remaining
		h := rapid.Int64Range(1, max(1, room)).Draw(t, "hits")
		if d := bucket.Take(p, &u, h, at); !d.Allowed {
			t.Fatalf("take %d with %d remaining denied: %+v", h, room, d)
		}
		bucket.Refund(p, &u, h, at)
		ops := drawOps(t, p, "after")
		var want, got []bucket.Decision
		run(p, &s, at, ops, func(d bucket.Decision) { want = append(want, d) })
		run(p, &u, at, ops, func(d bucket.Decision) { got = append(got, d) })
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("op %d (%+v): after take+refund %+v, untouched %+v", i, ops[i], got[i], want[i])
			}
		}
	})
}
