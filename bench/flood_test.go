package bench

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// A run of fresh keys far past the store's bound leaves every used-up key
// denied; a store that forgets them fails the scenario.
func TestFloodScenario(t *testing.T) {
	ctx := context.Background()
	auth := bucket.Policy{Name: "auth", Limit: 10, Window: 15 * time.Minute}
	for _, tc := range []struct {
		name    string
		store   bucket.Store
		forgave bool
	}{
		{"memory store", bucket.NewMemoryStore(bucket.MemoryConfig{Shards: 4, MaxKeys: 512}), false},
		{"a store that forgets", &forgetful{bucket.NewMemoryStore(bucket.MemoryConfig{})}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, err := NewStoreTarget(StoreConfig{Store: tc.store, Policies: []bucket.Policy{auth}})
			if err != nil {
				t.Fatal(err)
			}
			f, err := NewFlood(FloodConfig{Target: target, Limit: auth.Limit, Probes: 20, Every: 2 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Prepare(ctx); err != nil {
				t.Fatal(err)
			}
			_, err = Run(ctx, Config{Target: target, Policy: "auth", Keys: 200_000, Concurrency: 4,
				Requests: 50_000, Duration: 5 * time.Second, Scenario: f})
			probes, allowed := f.Probes()
			if probes == 0 {
				t.Fatal("no probe during the run")
			}
			if got := errors.Is(err, ErrFloodForgave); got != tc.forgave || (allowed > 0) != tc.forgave {
				t.Fatalf("run error %v, %d of %d probes allowed; want forgiven %v", err, allowed, probes, tc.forgave)
			}
		})
	}
}

// forgetful is a store that drops a counter whenever a new key arrives,
// as the store's eviction did before it spared used-up counters.
type forgetful struct{ *bucket.MemoryStore }

func (s *forgetful) Take(ctx context.Context, k bucket.Key, p bucket.Policy, hits int64, now time.Time) (bucket.Decision, error) {
	if k.ID[0] != 'f' { // a flood key: forget every probed counter
		for i := range 20 {
			s.Delete(bucket.Key{Policy: p.Name, ID: "flood-probe:" + strconv.Itoa(i)})
		}
	}
	return s.MemoryStore.Take(ctx, k, p, hits, now)
}
