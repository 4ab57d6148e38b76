package bucket_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/buckettest"
)

var (
	authPolicy  = bucket.Policy{Name: "auth", Limit: 10, Window: 15 * time.Minute}
	floodPolicy = bucket.Policy{Name: "default", Limit: 60, Window: time.Minute}
)

// useUp takes every hit of the key's counter, so that it denies.
func useUp(t *testing.T, s bucket.Store, p bucket.Policy, id string, at time.Time) {
	t.Helper()
	k := bucket.Key{Policy: p.Name, ID: id}
	if d, _ := s.Take(context.Background(), k, p, p.Limit, at); !d.Allowed {
		t.Fatalf("%s: first take denied: %+v", id, d)
	}
	if d, _ := s.Take(context.Background(), k, p, 1, at); d.Allowed {
		t.Fatalf("%s: allowed past its limit: %+v", id, d)
	}
}

// assertDenying checks that every key still denies a hit at at.
func assertDenying(t *testing.T, s bucket.Store, p bucket.Policy, ids []string, at time.Time) {
	t.Helper()
	for _, id := range ids {
		d, _ := s.Take(context.Background(), bucket.Key{Policy: p.Name, ID: id}, p, 1, at)
		if d.Allowed {
			t.Fatalf("used-up key %s allowed after the flood (remaining %d): its counter was evicted", id, d.Remaining)
		}
	}
}

// A flood of fresh keys, ten times the store's bound, evicts none of the
// used-up counters whose window still runs, and keeps the store within
// its bound.
func TestMemoryStoreFloodKeepsDenials(t *testing.T) {
	ctx := context.Background()
	const maxKeys = 1024
	s := bucket.NewMemoryStore(bucket.MemoryConfig{Shards: 8, MaxKeys: maxKeys})
	at := buckettest.Epoch
	var used []string
	for i := range 200 {
		id := fmt.Sprintf("ip:10.0.%d.%d", i/256, i%256)
		useUp(t, s, authPolicy, id, at)
		used = append(used, id)
	}
	for i := range 10 * maxKeys {
		at = at.Add(time.Millisecond)
		k := bucket.Key{Policy: floodPolicy.Name, ID: fmt.Sprintf("flood:%d", i)}
		if d, _ := s.Take(ctx, k, floodPolicy, 1, at); !d.Allowed {
			t.Fatalf("fresh key %s denied", k.ID)
		}
	}
	if n := s.Len(); n > maxKeys {
		t.Fatalf("%d counters held, bound %d", n, maxKeys)
	}
	if s.Evicted(bucket.EvictCounting) == 0 {
		t.Fatal("no counting counter evicted: the flood did not fill the store")
	}
	if n := s.Evicted(bucket.EvictDenying); n != 0 {
		t.Fatalf("%d denying counters evicted while counting ones remained", n)
	}
	assertDenying(t, s, authPolicy, used, at)
}

// When every counter of a full store denies, a fresh key is decided but not
// kept, and the denying counters stay until their windows end; then the
// idle ones make room.
func TestMemoryStoreFullOfDenialsRefusesNewKeys(t *testing.T) {
	ctx := context.Background()
	s := bucket.NewMemoryStore(bucket.MemoryConfig{Shards: 1, MaxKeys: 64})
	at := buckettest.Epoch
	var used []string
	for i := range 64 {
		id := fmt.Sprintf("ip:%d", i)
		useUp(t, s, authPolicy, id, at)
		used = append(used, id)
	}
	for i := range 500 {
		k := bucket.Key{Policy: floodPolicy.Name, ID: fmt.Sprintf("flood:%d", i)}
		if d, _ := s.Take(ctx, k, floodPolicy, 1, at.Add(time.Second)); !d.Allowed {
			t.Fatalf("fresh key %s denied", k.ID)
		}
	}
	if got := s.Evicted(bucket.EvictRefused); got != 500 {
		t.Fatalf("%d new counters refused, want 500", got)
	}
	if s.Evicted(bucket.EvictDenying) != 0 || s.Len() != 64 {
		t.Fatalf("denying evicted %d, held %d: want 0 and 64", s.Evicted(bucket.EvictDenying), s.Len())
	}
	assertDenying(t, s, authPolicy, used, at.Add(time.Minute))

	later := at.Add(authPolicy.Window*9/8 + time.Second)
	s.Take(ctx, bucket.Key{Policy: floodPolicy.Name, ID: "after"}, floodPolicy, 1, later)
	if s.Evicted(bucket.EvictIdle) != 1 || s.Evictions() != 501 {
		t.Fatalf("after the window: idle evicted %d, all %d; want 1 and 501", s.Evicted(bucket.EvictIdle), s.Evictions())
	}
}

// A full shard evicts the counter that forgives the fewest hits: idle
// before counting, one hit before five.
func TestMemoryStoreEvictsTheCheapest(t *testing.T) {
	ctx := context.Background()
	s := bucket.NewMemoryStore(bucket.MemoryConfig{Shards: 1, MaxKeys: 3})
	p := bucket.Policy{Name: "p", Limit: 100, Window: time.Minute}
	at := buckettest.Epoch
	take := func(id string, hits int64, at time.Time) {
		s.Take(ctx, bucket.Key{Policy: "p", ID: id}, p, hits, at)
	}
	used := func(id string, at time.Time) int64 {
		d, _ := s.Take(ctx, bucket.Key{Policy: "p", ID: id}, p, 0, at)
		return d.Limit - d.Remaining
	}
	take("five", 5, at)
	take("one", 1, at)
	take("old", 1, at.Add(-2*time.Minute)) // idle by now
	take("new", 2, at)                     // evicts "old": idle
	if used("five", at) != 5 || used("one", at) != 1 || used("new", at) != 2 {
		t.Fatal("a counting counter was evicted while an idle one remained")
	}
	take("newer", 2, at) // evicts "one": the fewest hits
	if used("five", at) != 5 || used("one", at) != 0 || used("new", at) != 2 || used("newer", at) != 2 {
		t.Fatal("the counter of one hit was not the one evicted")
	}
	if s.Evicted(bucket.EvictIdle) != 1 || s.Evicted(bucket.EvictCounting) != 1 {
		t.Fatalf("evicted idle %d, counting %d; want 1 and 1", s.Evicted(bucket.EvictIdle), s.Evicted(bucket.EvictCounting))
	}
}
