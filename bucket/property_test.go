package bucket_test

import (
	"math/big"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/buckettest"
)

// event is one admitted check of a schedule.
type event struct {
	at   int64 // µs since the start
	hits int64
}

// schedule draws a run of checks: time steps and hits.
type check struct {
	step time.Duration
	hits int64
}

func drawSchedule(t *rapid.T, window time.Duration, capacity int64) []check {
	n := rapid.IntRange(1, 200).Draw(t, "n")
	maxStep := int64(window) / max(1, capacity) * 3
	out := make([]check, n)
	for i := range out {
		out[i] = check{
			step: time.Duration(rapid.Int64Range(0, maxStep/1000).Draw(t, "step")) * time.Microsecond * 1000,
			hits: rapid.Int64Range(0, min(capacity+1, 8)).Draw(t, "hits"),
		}
	}
	return out
}

// sumIn returns the hits admitted in the interval (from, to].
func sumIn(log []event, from, to int64) int64 {
	var n int64
	for _, e := range log {
		if e.at > from && e.at <= to {
			n += e.hits
		}
	}
	return n
}

// TestPropertySlidingWindowAgainstLog compares the sliding window with an
// exact sliding log: whatever it admits keeps every rolling window at or
// under the limit, and it denies only when the log over window+slot holds
// too many hits, which bounds its under-admission to one slot of age.
func TestPropertySlidingWindowAgainstLog(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		limit := rapid.Int64Range(1, 50).Draw(t, "limit")
		window := time.Duration(rapid.Int64Range(8, 5000).Draw(t, "window_ms")) * time.Millisecond
		p := bucket.Policy{Name: "p", Limit: limit, Window: window}
		W, w := window.Microseconds(), window.Microseconds()/bucket.Slots
		start := buckettest.Epoch.Add(time.Duration(rapid.Int64Range(0, 10_000).Draw(t, "offset_ms")) * time.Millisecond)
		var s bucket.State
		var log []event
		at := start
		for i, c := range drawSchedule(t, window, limit) {
			at = at.Add(c.step)
			now := at.Sub(start).Microseconds()
			d := bucket.Take(p, &s, c.hits, at)
			need := max(c.hits, 1)
			exact := sumIn(log, now-W, now)
			if d.Allowed {
				if exact+need > limit {
					t.Fatalf("check %d at %dµs: allowed %d hits with %d in the rolling window, limit %d", i, now, need, exact, limit)
				}
				if c.hits > 0 {
					log = append(log, event{now, c.hits})
				}
			} else if extended := sumIn(log, now-W-w, now); need <= limit && extended+need <= limit {
				t.Fatalf("check %d at %dµs: denied %d hits with only %d in window+slot, limit %d", i, now, need, extended, limit)
			}
			if want := max(0, limit-counted(log, start.UnixMicro(), now, w)); d.Remaining != want {
				t.Fatalf("check %d: remaining %d, want %d", i, d.Remaining, want)
			}
		}
		// Every rolling window, checked at each admission, holds at most limit.
		for _, e := range log {
			if n := sumIn(log, e.at-W, e.at); n > limit {
				t.Fatalf("rolling window ending at %dµs holds %d hits, limit %d", e.at, n, limit)
			}
		}
	})
}

// counted returns the hits of the slots the sliding window counts at now:
// those from the start of slot cur-8 on. Slots are aligned to the Unix
// epoch; base is the schedule's start in Unix µs.
func counted(log []event, base, now, w int64) int64 {
	cur := floorDiv(base+now, w)
	var n int64
	for _, e := range log {
		if floorDiv(base+e.at, w) >= cur-bucket.Slots {
			n += e.hits
		}
	}
	return n
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// TestPropertyFixedWindow: a fixed window admits exactly while its count
// stays within the limit, and never more than the limit per window.
func TestPropertyFixedWindow(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		limit := rapid.Int64Range(1, 50).Draw(t, "limit")
		window := time.Duration(rapid.Int64Range(1, 5000).Draw(t, "window_ms")) * time.Millisecond
		p := bucket.Policy{Name: "p", Algorithm: bucket.FixedWindow, Limit: limit, Window: window}
		W := window.Microseconds()
		per := map[int64]int64{}
		var s bucket.State
		at := buckettest.Epoch
		for i, c := range drawSchedule(t, window, limit) {
			at = at.Add(c.step)
			win := floorDiv(at.UnixMicro(), W)
			d := bucket.Take(p, &s, c.hits, at)
			need := max(c.hits, 1)
			if want := per[win]+need <= limit; d.Allowed != want {
				t.Fatalf("check %d: allowed=%v with %d in window, need %d, limit %d", i, d.Allowed, per[win], need, limit)
			}
			if d.Allowed {
				per[win] += c.hits
			}
			if per[win] > limit {
				t.Fatalf("window %d holds %d, limit %d", win, per[win], limit)
			}
		}
	})
}

// TestPropertyGCRA checks GCRA against its guarantee: in any interval of
// length T, at most burst+1 + T/interval hits pass; and against a naive
// leaky bucket (a water level that drains one interval of work per
// interval of time): the same decisions.
func TestPropertyGCRA(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		limit := rapid.Int64Range(1, 100).Draw(t, "limit")
		window := time.Duration(rapid.Int64Range(100, 5000).Draw(t, "window_ms")) * time.Millisecond
		burst := rapid.Int64Range(0, 20).Draw(t, "burst")
		p := bucket.Policy{Name: "p", Algorithm: bucket.GCRA, Limit: limit, Window: window, Burst: burst}
		I := window.Microseconds() / limit
		var s bucket.State
		var log []event
		var level, last int64 // naive model: µs of queued work at time last
		at := buckettest.Epoch
		for i, c := range drawSchedule(t, window, burst+1) {
			at = at.Add(c.step)
			now := at.Sub(buckettest.Epoch).Microseconds()
			level = max(0, level-(now-last))
			last = now
			need := max(c.hits, 1)
			want := level+need*I <= (burst+1)*I
			d := bucket.Take(p, &s, c.hits, at)
			if d.Allowed != want {
				t.Fatalf("check %d: allowed=%v, naive leaky bucket says %v (level %dµs, need %d, interval %dµs)", i, d.Allowed, want, level, need, I)
			}
			if d.Allowed && c.hits > 0 {
				level += c.hits * I
				log = append(log, event{now, c.hits})
			}
		}
		for i := range log {
			var n int64
			for j := i; j < len(log); j++ {
				n += log[j].hits
				if bound := burst + 1 + (log[j].at-log[i].at)/I; n > bound {
					t.Fatalf("hits %d..%d: %d passed in %dµs, bound %d", i, j, n, log[j].at-log[i].at, bound)
				}
			}
		}
	})
}

// TestPropertyTokenBucket compares the token bucket with a reference that
// counts tokens exactly in rationals: refill limit per window, capacity
// limit+burst.
func TestPropertyTokenBucket(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		limit := rapid.SampledFrom([]int64{1, 2, 4, 5, 8, 10, 20, 25, 50, 100}).Draw(t, "limit")
		window := time.Duration(rapid.Int64Range(1, 50).Draw(t, "window_100ms")) * 100 * time.Millisecond
		burst := rapid.Int64Range(0, 20).Draw(t, "burst")
		p := bucket.Policy{Name: "p", Algorithm: bucket.TokenBucket, Limit: limit, Window: window, Burst: burst}
		capacity := big.NewRat(limit+burst, 1)
		tokens := new(big.Rat).Set(capacity)
		rate := big.NewRat(limit, window.Microseconds()) // tokens per µs
		var s bucket.State
		var last int64
		at := buckettest.Epoch
		for i, c := range drawSchedule(t, window, limit+burst) {
			at = at.Add(c.step)
			now := at.Sub(buckettest.Epoch).Microseconds()
			tokens.Add(tokens, new(big.Rat).Mul(rate, big.NewRat(now-last, 1)))
			if tokens.Cmp(capacity) > 0 {
				tokens.Set(capacity)
			}
			last = now
			need := big.NewRat(max(c.hits, 1), 1)
			want := tokens.Cmp(need) >= 0
			d := bucket.Take(p, &s, c.hits, at)
			if d.Allowed != want {
				t.Fatalf("check %d: allowed=%v, reference says %v (tokens %s, need %s)", i, d.Allowed, want, tokens.FloatString(3), need)
			}
			if d.Allowed && c.hits > 0 {
				tokens.Sub(tokens, big.NewRat(c.hits, 1))
			}
			whole := new(big.Int).Quo(tokens.Num(), tokens.Denom()).Int64()
			if d.Remaining != whole {
				t.Fatalf("check %d: remaining %d, reference %d", i, d.Remaining, whole)
			}
		}
	})
}

// TestPropertyRemainingNeverRisesAtFixedNow: at a fixed time, remaining can
// only fall, whatever is taken.
func TestPropertyRemainingNeverRisesAtFixedNow(t *testing.T) {
	policies := buckettest.SeedPolicies()
	rapid.Check(t, func(t *rapid.T) {
		p := policies[rapid.IntRange(0, len(policies)-1).Draw(t, "policy")]
		at := buckettest.Epoch.Add(time.Duration(rapid.Int64Range(0, 1e6).Draw(t, "at_ms")) * time.Millisecond)
		var s bucket.State
		prev := int64(-1)
		for i := range rapid.IntRange(1, 50).Draw(t, "n") {
			d := bucket.Take(p, &s, rapid.Int64Range(0, 5).Draw(t, "hits"), at)
			if prev >= 0 && d.Remaining > prev {
				t.Fatalf("check %d: remaining rose from %d to %d at a fixed time", i, prev, d.Remaining)
			}
			prev = d.Remaining
		}
	})
}

// TestPropertyWindowChangeForgetsNothing: when a sliding or fixed window's
// size changes mid-run (a policy edit), the hits its state counted at the
// change keep counting: with the new size, from the first check after the
// change that takes hits (t1), they count for a whole new window (sliding) or in the new
// window holding t1 (fixed), beside every hit admitted after the change.
// Every hit held happened by t1, so a sliding log would count none of them
// longer. Only a state that is idle at t1 (its hits all past the old
// window) starts afresh. The new size is drawn among multiples and
// fractions of the old, where slot boundaries line up.
func TestPropertyWindowChangeForgetsNothing(t *testing.T) {
	for _, alg := range []bucket.Algorithm{bucket.SlidingWindow, bucket.FixedWindow} {
		t.Run(alg.String(), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				limit := rapid.Int64Range(1, 30).Draw(t, "limit")
				w1 := time.Duration(rapid.Int64Range(1, 500).Draw(t, "window_ms")) * 8 * time.Millisecond
				factor := rapid.SampledFrom([][2]int64{{1, 2}, {2, 1}, {1, 3}, {3, 1}, {3, 2}, {2, 3}, {1, 8}, {9, 1}, {5, 7}}).Draw(t, "factor")
				w2 := w1 * time.Duration(factor[0]) / time.Duration(factor[1])
				p := bucket.Policy{Name: "p", Algorithm: alg, Limit: limit, Window: w1}
				at := buckettest.Epoch.Add(time.Duration(rapid.Int64Range(0, 100_000).Draw(t, "offset_ms")) * time.Millisecond)
				var s bucket.State
				var after []event // admitted after the change
				var held, t1 int64
				n := rapid.IntRange(2, 120).Draw(t, "n")
				change := rapid.IntRange(1, n-1).Draw(t, "change_at")
				maxStep := int64(max(w1, w2)) / limit * 2
				for i := range n {
					if i == change {
						for _, c := range s.Count {
							held += int64(c)
						}
						p.Window = w2
					}
					at = at.Add(time.Duration(rapid.Int64Range(0, maxStep).Draw(t, "step")))
					hits := rapid.Int64Range(0, min(limit, 4)).Draw(t, "hits")
					if i >= change && hits > 0 && t1 == 0 {
						// The first check that writes the state (a peek
						// leaves it as it is).
						t1 = at.UnixMicro()
						if s.IdleAt(at) {
							held = 0
						}
					}
					if d := bucket.Take(p, &s, hits, at); d.Allowed && hits > 0 && i >= change {
						after = append(after, event{at.UnixMicro(), hits})
					}
				}
				W2 := w2.Microseconds()
				for _, e := range after {
					from, still := e.at-W2, e.at <= t1+W2 // sliding: (e.at-W2, e.at]
					if alg == bucket.FixedWindow {
						start := floorDiv(e.at, W2) * W2
						from, still = start-1, start == floorDiv(t1, W2)*W2
					}
					got := sumIn(after, from, e.at)
					if still {
						got += held
					}
					if got > limit {
						t.Fatalf("after %v → %v (%d held at the change): %d hits in the window ending %dµs after the first check after it, limit %d",
							w1, w2, held, got, e.at-t1, limit)
					}
				}
			})
		})
	}
}

// drawPolicy draws a valid policy of any algorithm.
func drawPolicy(t *rapid.T) bucket.Policy {
	p := bucket.Policy{
		Name:      "p",
		Algorithm: bucket.Algorithm(rapid.IntRange(0, 3).Draw(t, "algorithm")),
		Limit:     rapid.Int64Range(1, 40).Draw(t, "limit"),
		Window:    time.Duration(rapid.Int64Range(8, 5000).Draw(t, "window_ms")) * time.Millisecond,
	}
	if p.Algorithm == bucket.GCRA || p.Algorithm == bucket.TokenBucket {
		p.Burst = rapid.Int64Range(0, 10).Draw(t, "burst")
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("drawn policy %+v: %v", p, err)
	}
	return p
}

// drawState runs a schedule of checks on a copy of s from start and
// returns the state and the time of its last check.
func drawState(t *rapid.T, p bucket.Policy, s bucket.State, start time.Time, label string) (bucket.State, time.Time) {
	at := start
	n := rapid.IntRange(0, 30).Draw(t, label+"_checks")
	for range n {
		at = at.Add(time.Duration(rapid.Int64Range(0, p.Window.Milliseconds()/2).Draw(t, label+"_step_ms")) * time.Millisecond)
		bucket.Take(p, &s, rapid.Int64Range(0, p.Capacity()).Draw(t, label+"_hits"), at)
	}
	return s, at
}

// TestPropertyMerge: Merge is commutative and idempotent, and the merged
// state never admits more than either input: two nodes that counted the
// same key from a common state (the one handed over, or a fresh one) fold
// into a state whose every later check is at most as generous as each
// node's own.
func TestPropertyMerge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := drawPolicy(t)
		start := buckettest.Epoch.Add(time.Duration(rapid.Int64Range(0, 10_000).Draw(t, "offset_ms")) * time.Millisecond)
		common, at := drawState(t, p, bucket.State{}, start, "common")
		a, atA := drawState(t, p, common, at, "a")
		b, atB := drawState(t, p, common, at, "b")

		m := bucket.Merge(p, a, b)
		if m2 := bucket.Merge(p, b, a); m != m2 {
			t.Fatalf("not commutative: Merge(a, b) = %+v, Merge(b, a) = %+v", m, m2)
		}
		if aa := bucket.Merge(p, a, a); aa != a {
			t.Fatalf("not idempotent: Merge(a, a) = %+v, a = %+v", aa, a)
		}
		if mm := bucket.Merge(p, m, a); mm != m {
			t.Fatalf("merging a again changed the merged state: %+v, was %+v", mm, m)
		}

		now := atA
		if atB.After(now) {
			now = atB
		}
		now = now.Add(time.Duration(rapid.Int64Range(0, 3*p.Window.Milliseconds()).Draw(t, "later_ms")) * time.Millisecond)
		hits := rapid.Int64Range(1, p.Capacity()).Draw(t, "hits")
		peek := bucket.Take(p, &m, 0, now)
		dm := bucket.Take(p, &m, hits, now)
		for _, in := range []struct {
			name string
			s    bucket.State
		}{{"a", a}, {"b", b}} {
			if d := bucket.Take(p, &in.s, 0, now); peek.Remaining > d.Remaining {
				t.Fatalf("%v: %d remaining in the merged state, %d in %s: more than either input",
					p.Algorithm, peek.Remaining, d.Remaining, in.name)
			}
			if d := bucket.Take(p, &in.s, hits, now); dm.Allowed && !d.Allowed {
				t.Fatalf("%v: the merged state admits %d hits that %s alone denies", p.Algorithm, hits, in.name)
			}
		}
	})
}
