package bucket_test

import (
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/buckettest"
)

// step is one scripted check: at offset at, hits, and the exact decision.
type step struct {
	at        time.Duration
	hits      int64
	allowed   bool
	remaining int64
	reset     time.Duration
	retry     time.Duration
}

func runScript(t *testing.T, p bucket.Policy, steps []step) {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	var s bucket.State
	for i, st := range steps {
		d := bucket.Take(p, &s, st.hits, buckettest.Epoch.Add(st.at))
		want := bucket.Decision{Allowed: st.allowed, Limit: p.Capacity(), Remaining: st.remaining, ResetAfter: st.reset, RetryAfter: st.retry}
		if d != want {
			t.Fatalf("step %d (at %v, hits %d):\n got %+v\nwant %+v", i, st.at, st.hits, d, want)
		}
	}
}

// repeat returns n steps at the same time, each of one hit, counting
// remaining down from start.
func repeat(n int, at time.Duration, start int64, reset time.Duration) []step {
	var out []step
	for i := range n {
		out = append(out, step{at: at, hits: 1, allowed: true, remaining: start - int64(i) - 1, reset: reset})
	}
	return out
}

func TestSlidingWindowSeedPolicies(t *testing.T) {
	// Epoch is aligned to every slot below, so hits at +0 sit at the start of
	// slot 0 and leave the counted set at the start of slot 9: window×9/8.
	cases := []struct {
		name  string
		limit int64
		win   time.Duration
	}{
		{"default", 60, 60 * time.Second},
		{"auth", 10, 15 * time.Minute},
		{"sensitive", 30, time.Hour},
		{"admin", 120, 60 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := bucket.Policy{Name: c.name, Limit: c.limit, Window: c.win}
			slot := c.win / 8
			full := 9 * slot
			steps := repeat(int(c.limit), 0, c.limit, full)
			steps = append(steps,
				// Over the limit: denied until slot 0 leaves the counted set.
				step{at: 0, hits: 1, remaining: 0, reset: full, retry: full},
				step{at: c.win, hits: 1, remaining: 0, reset: full - c.win, retry: full - c.win},
				// Peek while full.
				step{at: c.win, hits: 0, remaining: 0, reset: full - c.win, retry: full - c.win},
				// At window×9/8 the whole limit is back.
				step{at: full, hits: 0, allowed: true, remaining: c.limit},
				step{at: full, hits: c.limit, allowed: true, remaining: 0, reset: full},
			)
			runScript(t, p, steps)
		})
	}
}

func TestSlidingWindowSpread(t *testing.T) {
	// 4 per 8 s: one slot per second. Hits in slots 0,1,2,3; the hit of slot
	// k leaves at k+9 s.
	p := bucket.Policy{Name: "p", Limit: 4, Window: 8 * time.Second}
	s := time.Second
	runScript(t, p, []step{
		{at: 0, hits: 1, allowed: true, remaining: 3, reset: 9 * s},
		{at: 1500 * time.Millisecond, hits: 1, allowed: true, remaining: 2, reset: 10*s - 1500*time.Millisecond},
		{at: 2 * s, hits: 2, allowed: true, remaining: 0, reset: 9 * s},
		// Need 2: slots 0 and 1 must leave, at 9 s and 10 s.
		{at: 3 * s, hits: 2, remaining: 0, reset: 8 * s, retry: 7 * s},
		{at: 3 * s, hits: 1, remaining: 0, reset: 8 * s, retry: 6 * s},
		{at: 8*s + 999*time.Millisecond, hits: 1, remaining: 0, reset: 2*s + time.Millisecond, retry: time.Millisecond},
		{at: 9 * s, hits: 1, allowed: true, remaining: 0, reset: 9 * s},
		// A hit can never exceed the limit.
		{at: 100 * s, hits: 5, remaining: 4, reset: 0, retry: 0},
	})
}

func TestGCRANginxZone(t *testing.T) {
	ms := time.Millisecond
	// api_limit: 5 r/s, burst 0: one request per 200 ms.
	p := bucket.Policy{Name: "api_limit", Algorithm: bucket.GCRA, Limit: 5, Window: time.Second}
	runScript(t, p, []step{
		{at: 0, hits: 1, allowed: true, remaining: 0, reset: 200 * ms},
		{at: 0, hits: 1, remaining: 0, reset: 200 * ms, retry: 200 * ms},
		{at: 150 * ms, hits: 1, remaining: 0, reset: 50 * ms, retry: 50 * ms},
		{at: 200 * ms, hits: 1, allowed: true, remaining: 0, reset: 200 * ms},
		{at: 400 * ms, hits: 0, allowed: true, remaining: 1},
		{at: 400 * ms, hits: 2, remaining: 1, reset: 0, retry: 0},
	})
	// burst 10 (nodelay): 11 at once, then one per 200 ms.
	p.Burst = 10
	steps := []step{}
	for i := range 11 {
		steps = append(steps, step{at: 0, hits: 1, allowed: true, remaining: int64(10 - i), reset: time.Duration(i+1) * 200 * ms})
	}
	steps = append(steps,
		step{at: 0, hits: 1, remaining: 0, reset: 2200 * ms, retry: 200 * ms},
		step{at: 100 * ms, hits: 1, remaining: 0, reset: 2100 * ms, retry: 100 * ms},
		step{at: 200 * ms, hits: 1, allowed: true, remaining: 0, reset: 2200 * ms},
		step{at: 1200 * ms, hits: 3, allowed: true, remaining: 2, reset: 1800 * ms},
	)
	runScript(t, p, steps)
}

func TestTokenBucket(t *testing.T) {
	ms := time.Millisecond
	// 20 per second, burst 5: 25 tokens, one back every 50 ms.
	p := bucket.Policy{Name: "tb", Algorithm: bucket.TokenBucket, Limit: 20, Window: time.Second, Burst: 5}
	runScript(t, p, []step{
		{at: 0, hits: 25, allowed: true, remaining: 0, reset: 1250 * ms},
		{at: 0, hits: 1, remaining: 0, reset: 1250 * ms, retry: 50 * ms},
		{at: 120 * ms, hits: 3, remaining: 2, reset: 1130 * ms, retry: 30 * ms},
		{at: 150 * ms, hits: 3, allowed: true, remaining: 0, reset: 1250 * ms},
		{at: 2 * time.Second, hits: 0, allowed: true, remaining: 25},
	})
}

func TestFixedWindow(t *testing.T) {
	s := time.Second
	p := bucket.Policy{Name: "fw", Algorithm: bucket.FixedWindow, Limit: 7, Window: 10 * s}
	steps := repeat(7, 3*s, 7, 7*s)
	steps = append(steps,
		step{at: 3 * s, hits: 1, remaining: 0, reset: 7 * s, retry: 7 * s},
		step{at: 9*s + 999*time.Millisecond, hits: 1, remaining: 0, reset: time.Millisecond, retry: time.Millisecond},
		// The window turns: the full limit is back at once.
		step{at: 10 * s, hits: 7, allowed: true, remaining: 0, reset: 10 * s},
		step{at: 25 * s, hits: 0, allowed: true, remaining: 7},
	)
	runScript(t, p, steps)
}

func TestOverrideLimitFor(t *testing.T) {
	p := bucket.Policy{Name: "p", Limit: 2, Window: time.Minute, Overrides: map[string]int64{"vip": 9}}
	if got := p.LimitFor("vip"); got != 9 {
		t.Fatalf("LimitFor(vip) = %d", got)
	}
	if got := p.LimitFor("x"); got != 2 {
		t.Fatalf("LimitFor(x) = %d", got)
	}
}

func TestLoweredLimitAppliesAtOnce(t *testing.T) {
	p := bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}
	var s bucket.State
	for range 5 {
		bucket.Take(p, &s, 1, buckettest.Epoch)
	}
	p.Limit = 4
	if d := bucket.Take(p, &s, 1, buckettest.Epoch); d.Allowed || d.Remaining != 0 {
		t.Fatalf("after lowering the limit below the count: %+v, want denied", d)
	}
}

func TestWindowChangeKeepsHits(t *testing.T) {
	for _, win := range []time.Duration{2 * time.Minute, 61 * time.Second, 77 * time.Second} {
		p := bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}
		var s bucket.State
		bucket.Take(p, &s, 6, buckettest.Epoch.Add(7*time.Second))
		p.Window = win
		if d := bucket.Take(p, &s, 5, buckettest.Epoch.Add(8*time.Second)); d.Allowed || d.Remaining != 4 {
			t.Fatalf("window 1m → %v: the counted hits must stay: %+v", win, d)
		}
	}
}

// A state written under another window than the policy's (a node that had
// not yet applied an edit hands it over) merges as the fuller of the two,
// and its hits are counted, not lost, on the next take.
func TestMergeAcrossWindowChange(t *testing.T) {
	old := bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}
	cur := old
	cur.Window = 30 * time.Second
	var a, b bucket.State
	bucket.Take(old, &a, 6, buckettest.Epoch.Add(20*time.Second))
	bucket.Take(cur, &b, 2, buckettest.Epoch.Add(21*time.Second))
	for _, m := range []bucket.State{bucket.Merge(cur, a, b), bucket.Merge(cur, b, a)} {
		if d := bucket.Take(cur, &m, 5, buckettest.Epoch.Add(22*time.Second)); d.Allowed || d.Remaining != 4 {
			t.Fatalf("after merging 6 hits of the old window with 2 of the new: %+v, want denied with 4 remaining", d)
		}
	}
}

func TestClockGoingBack(t *testing.T) {
	for _, p := range buckettest.SeedPolicies() {
		var s bucket.State
		n := 0
		for i := range 3 * int(p.Capacity()) {
			// Alternate between now and one second earlier.
			at := buckettest.Epoch.Add(time.Duration(i%2) * -time.Second)
			if bucket.Take(p, &s, 1, at).Allowed {
				n++
			}
		}
		if int64(n) > p.Capacity() {
			t.Errorf("%s: a clock going back admitted %d, capacity %d", p.Name, n, p.Capacity())
		}
	}
}

func TestMerge(t *testing.T) {
	at := buckettest.Epoch
	for _, p := range buckettest.SeedPolicies() {
		t.Run(p.Name, func(t *testing.T) {
			var a, b bucket.State
			bucket.Take(p, &a, 1, at)
			bucket.Take(p, &b, p.Capacity(), at.Add(time.Millisecond))
			for _, m := range []bucket.State{bucket.Merge(p, a, b), bucket.Merge(p, b, a)} {
				if d := bucket.Take(p, &m, 0, at.Add(time.Millisecond)); d.Remaining != 0 {
					t.Fatalf("merge lost the fuller state: remaining %d", d.Remaining)
				}
			}
		})
	}
}

// A TAT that a run of policy edits left more than 2^53 µs ahead of now is
// taken as 2^53 µs ahead, where the Redis script's doubles are still
// exact; the check is denied either way.
func TestRatedStateFarAhead(t *testing.T) {
	p := bucket.Policy{Name: "p", Algorithm: bucket.GCRA, Limit: 20, Window: 15 * time.Minute, Burst: 5}
	now := buckettest.Epoch
	s := bucket.State{T: now.UnixMicro() + 1<<53 + 7}
	d := bucket.Take(p, &s, 1, now)
	if d.Allowed || d.ResetAfter != (1<<53)*time.Microsecond || d.Remaining != 0 {
		t.Fatalf("a TAT 2^53+7 µs ahead: %+v, want denied, reset after 2^53 µs", d)
	}
}
