package cluster

import (
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vibewell/ratelimit/bucket"
)

// No check the denial cache answers would have been allowed by the owner:
// checks from this node go through the cache to an exact single-node owner,
// other nodes' checks reach the owner directly, time moves in steps down to
// a microsecond, and policies are edited (each edit a new table entry). And
// the cache does answer: a denied check repeated at once never reaches the
// owner.
func TestPropertyDenyCacheExact(t *testing.T) {
	algorithms := []bucket.Algorithm{bucket.SlidingWindow, bucket.GCRA, bucket.TokenBucket, bucket.FixedWindow}
	answered := 0
	rapid.Check(t, func(t *rapid.T) {
		c := newDenyCache(rapid.IntRange(1, 200).Draw(t, "size"), 0)
		newPolicy := func(t *rapid.T) *policyEntry {
			return &policyEntry{Policy: bucket.Policy{
				Name:      "p",
				Algorithm: rapid.SampledFrom(algorithms).Draw(t, "algorithm"),
				Limit:     rapid.Int64Range(1, 6).Draw(t, "limit"),
				Window:    time.Duration(rapid.Int64Range(8, 2000).Draw(t, "window_ms")) * time.Millisecond,
				Burst:     rapid.Int64Range(0, 3).Draw(t, "burst"),
			}}
		}
		p := newPolicy(t)
		owner := map[string]*bucket.State{}
		state := func(key string) *bucket.State {
			if owner[key] == nil {
				owner[key] = &bucket.State{}
			}
			return owner[key]
		}
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for range rapid.IntRange(1, 300).Draw(t, "ops") {
			step := rapid.Int64Range(0, 300_000).Draw(t, "step_us")
			if rapid.Bool().Draw(t, "short") {
				step %= 2000 // near the edges of retry times
			}
			now = now.Add(time.Duration(step) * time.Microsecond)
			key := fmt.Sprint("k", rapid.IntRange(0, 3).Draw(t, "key"))
			hits := rapid.Int64Range(0, 4).Draw(t, "hits")
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0:
				p = newPolicy(t) // a policy edit: a new table
			case 1, 2:
				bucket.Take(p.Policy, state(key), hits, now) // another node's check
			default:
				if d, ok := c.lookup(p, key, hits, now); ok {
					answered++
					st := *state(key)
					if o := bucket.Take(p.Policy, &st, hits, now); o.Allowed {
						t.Fatalf("cache denied %d hits of %s (retry in %v) that the owner allows: %+v", hits, key, d.RetryAfter, o)
					}
					if d.Allowed || d.RetryAfter <= 0 {
						t.Fatalf("cache answer %+v: want a denial with a retry time", d)
					}
					continue
				}
				d := bucket.Take(p.Policy, state(key), hits, now)
				c.store(p, key, hits, d, now)
				if !d.Allowed && d.RetryAfter > 0 && hits > 0 {
					if _, ok := c.lookup(p, key, hits, now); !ok {
						t.Fatalf("a denial of %d hits of %s (retry in %v) is not answered at once", hits, key, d.RetryAfter)
					}
				}
			}
		}
	})
	if answered == 0 {
		t.Fatal("the cache answered no check in any run")
	}
}

// The cache holds at most its size, and a disabled cache answers nothing.
func TestDenyCacheBounded(t *testing.T) {
	c := newDenyCache(denyShards*4, 0)
	p := &policyEntry{Policy: bucket.Policy{Name: "p", Limit: 1, Window: time.Hour}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	deny := Decision{Limit: 1, RetryAfter: time.Minute, ResetAfter: time.Minute}
	for i := range 10_000 {
		c.store(p, fmt.Sprint("k", i), 1, deny, now)
	}
	if n := c.len(); n > denyShards*4 {
		t.Fatalf("%d denials held, bound %d", n, denyShards*4)
	}
	var off *denyCache = newDenyCache(-1, 0)
	off.store(p, "k", 1, deny, now)
	if _, ok := off.lookup(p, "k", 1, now); ok || off != nil {
		t.Fatal("a disabled cache answered")
	}
}
