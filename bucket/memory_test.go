package bucket_test

import (
	"context"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/buckettest"
)

func TestMemoryStoreConformance(t *testing.T) {
	buckettest.RunStoreTests(t, func(*testing.T) bucket.Store {
		return bucket.NewMemoryStore(bucket.MemoryConfig{})
	})
}

// With TrackChanges, Changed yields each counter that admitted hits or a
// Merge changed since the last call, once, as it is now; peeks and denials
// change nothing worth copying and are not listed.
func TestMemoryStoreChanged(t *testing.T) {
	ctx := context.Background()
	p := bucket.Policy{Name: "p", Limit: 3, Window: time.Hour}
	at := buckettest.Epoch
	changed := func(s *bucket.MemoryStore) map[string]int64 {
		got := map[string]int64{}
		s.Changed(func(k bucket.Key, st bucket.State) {
			if _, dup := got[k.ID]; dup {
				t.Errorf("%s listed twice", k.ID)
			}
			d := bucket.Take(p, &st, 0, at)
			got[k.ID] = p.Limit - d.Remaining
		})
		return got
	}

	s := bucket.NewMemoryStore(bucket.MemoryConfig{TrackChanges: true})
	if !s.Tracking() {
		t.Fatal("Tracking() is false with TrackChanges")
	}
	for _, id := range []string{"a", "a", "b"} {
		s.Take(ctx, bucket.Key{Policy: "p", ID: id}, p, 1, at)
	}
	s.Take(ctx, bucket.Key{Policy: "p", ID: "peek"}, p, 0, at)
	if got := changed(s); len(got) != 2 || got["a"] != 2 || got["b"] != 1 {
		t.Fatalf("changed %v, want a:2 b:1", got)
	}
	if got := changed(s); len(got) != 0 {
		t.Fatalf("changed again with no check between: %v", got)
	}
	for range 3 {
		s.Take(ctx, bucket.Key{Policy: "p", ID: "a"}, p, 1, at) // one admitted, two denied
	}
	if got := changed(s); len(got) != 1 || got["a"] != 3 {
		t.Fatalf("changed %v, want a:3", got)
	}
	s.Take(ctx, bucket.Key{Policy: "p", ID: "a"}, p, 1, at) // denied: nothing new
	var full bucket.State
	bucket.Take(p, &full, 3, at)
	s.Merge(bucket.Key{Policy: "p", ID: "c"}, p, full, at)
	if got := changed(s); len(got) != 1 || got["c"] != 3 {
		t.Fatalf("after a denial and a merge: changed %v, want c:3", got)
	}

	// Below a capacity of 2048, every admitted hit lists its counter (once
	// until Changed).
	big := bucket.Policy{Name: "big", Limit: 64, Window: time.Hour}
	k := bucket.Key{Policy: "big", ID: "x"}
	for i := 1; i <= 9; i++ {
		s.Take(ctx, k, big, 1, at)
		n := 0
		s.Changed(func(bucket.Key, bucket.State) { n++ })
		if want := 1; n != want {
			t.Fatalf("after hit %d of a 64 capacity: %d listed, want %d", i, n, want)
		}
	}

	off := bucket.NewMemoryStore(bucket.MemoryConfig{})
	off.Take(ctx, bucket.Key{Policy: "p", ID: "a"}, p, 1, at)
	if got := changed(off); off.Tracking() || len(got) != 0 {
		t.Fatalf("without TrackChanges: tracking %v, changed %v", off.Tracking(), got)
	}
}

// With TrackChanges, a counter is listed once the hits admitted since it
// was last listed reach CopyEvery: every hit below a capacity of 2048 and
// with ReplicateSync, capacity/1024 hits above. A refund and MarkChanged
// list it at once, and NotifyChanged tells when a list gets its first
// counter since Changed.
func TestMemoryStoreListEvery(t *testing.T) {
	ctx := context.Background()
	at := buckettest.Epoch
	for _, tc := range []struct {
		p     bucket.Policy
		every int64
	}{
		{bucket.Policy{Name: "small", Limit: 2047, Window: time.Hour}, 1},
		{bucket.Policy{Name: "edge", Limit: 2048, Window: time.Hour}, 2},
		{bucket.Policy{Name: "huge", Limit: 1 << 31, Window: time.Hour}, 1 << 21},
		{bucket.Policy{Name: "sync", Limit: 1 << 31, Window: time.Hour, Replication: bucket.ReplicateSync}, 1},
		{bucket.Policy{Name: "gcra", Algorithm: bucket.GCRA, Limit: 1000, Window: time.Second, Burst: 4095}, 4},
		{bucket.Policy{Name: "tb", Algorithm: bucket.TokenBucket, Limit: 4096, Window: time.Second, Burst: 4096}, 8},
	} {
		if got := bucket.CopyEvery(&tc.p); got != tc.every {
			t.Fatalf("%s: CopyEvery %d, want %d", tc.p.Name, got, tc.every)
		}
		s := bucket.NewMemoryStore(bucket.MemoryConfig{Shards: 1, TrackChanges: true})
		notified := 0
		s.NotifyChanged(func() { notified++ })
		listed := func() int {
			n := 0
			s.Changed(func(bucket.Key, bucket.State) { n++ })
			return n
		}
		k := bucket.Key{Policy: tc.p.Name, ID: "x"}
		// Three rounds: the count starts over once the counter is listed,
		// and hits admitted while it is listed go with its copy.
		for round := range 3 {
			if tc.every > 1 {
				if d, _ := s.Take(ctx, k, tc.p, tc.every-1, at); !d.Allowed {
					t.Fatalf("%s: %d hits denied", tc.p.Name, tc.every-1)
				}
				if n := listed(); n != 0 || notified != round {
					t.Fatalf("%s round %d: %d hits below CopyEvery listed %d, notified %d times", tc.p.Name, round, tc.every-1, n, notified)
				}
			}
			s.Take(ctx, k, tc.p, 1, at)
			s.Take(ctx, k, tc.p, 1, at) // listed already: copied with it
			if n := listed(); n != 1 || notified != round+1 {
				t.Fatalf("%s round %d: the hit reaching CopyEvery listed %d, notified %d times, want 1 and %d", tc.p.Name, round, n, notified, round+1)
			}
		}
		s.MarkChanged(k)
		if n := listed(); n != 1 {
			t.Fatalf("%s: MarkChanged listed %d", tc.p.Name, n)
		}
		s.MarkChanged(bucket.Key{Policy: tc.p.Name, ID: "absent"})
		if n := listed(); n != 0 {
			t.Fatalf("%s: MarkChanged of an absent key listed %d", tc.p.Name, n)
		}
		s.Refund(ctx, k, tc.p, 1, at)
		if n := listed(); n != 1 {
			t.Fatalf("%s: a refund listed %d", tc.p.Name, n)
		}
	}
}
