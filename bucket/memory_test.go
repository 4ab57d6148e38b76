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

	// Every admitted hit lists its counter (once until Changed), whatever
	// the capacity.
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
