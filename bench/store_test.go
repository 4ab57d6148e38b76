package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/redisstore"
	"github.com/vibewell/ratelimit/cluster"
)

func storeRun(t *testing.T, store bucket.Store, batch int) {
	t.Helper()
	p := bucket.Policy{Name: "bench", Limit: 5, Window: time.Hour}
	target, err := NewStoreTarget(StoreConfig{Store: store, Policies: []bucket.Policy{p}})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close(context.Background())
	res, err := Run(context.Background(), Config{Target: target, Policy: "bench", PolicySpec: &p, Keys: 10,
		Requests: 500, Batch: batch, Concurrency: 4, Seed: 13})
	if err != nil {
		t.Fatal(err)
	}
	if a := res.Accuracy; res.Errors != 0 || a.OverAdmitted != 0 || a.UnderAdmitted != 0 || a.AllowedHits != 50 {
		t.Errorf("batch %d: errors %v accuracy %+v", batch, res.ErrorKinds, a)
	}
	if _, err := target.Check(context.Background(), "nope", "k", 1); ErrorKind(err) != "unknown_policy" {
		t.Errorf("unknown policy: %v", err)
	}
}

func TestStoreTargetMemory(t *testing.T) {
	for _, batch := range []int{1, 10} {
		storeRun(t, bucket.NewMemoryStore(bucket.MemoryConfig{}), batch)
	}
}

func TestStoreTargetRedis(t *testing.T) {
	url := os.Getenv("RATELIMIT_TEST_REDIS_URL")
	if url == "" {
		t.Skip("RATELIMIT_TEST_REDIS_URL not set (scripts/test.sh sets it)")
	}
	for _, batch := range []int{1, 10} {
		store, err := redisstore.New(context.Background(), redisstore.Options{URL: url, Prefix: "benchtest"})
		if err != nil {
			t.Fatal(err)
		}
		storeRun(t, store, batch)
		store.Close()
	}
}

func TestEmbeddedTarget(t *testing.T) {
	ctx := context.Background()
	p := bucket.Policy{Name: "bench", Limit: 4, Window: time.Hour}
	e, err := NewEmbedded(ctx, EmbeddedConfig{Node: cluster.Config{Policies: []bucket.Policy{p}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	res, err := Run(ctx, Config{Target: e, Policy: "bench", PolicySpec: &p, Keys: 8, Requests: 400, Concurrency: 4, Seed: 14})
	if err != nil {
		t.Fatal(err)
	}
	if a := res.Accuracy; res.Errors != 0 || a.OverAdmitted != 0 || a.UnderAdmitted != 0 || a.AllowedHits != 32 {
		t.Errorf("errors %v accuracy %+v", res.ErrorKinds, a)
	}
}

// TestEmbeddedCluster checks one hot key hammered through three in-process
// nodes is allowed exactly its limit.
func TestEmbeddedCluster(t *testing.T) {
	ctx := context.Background()
	p := bucket.Policy{Name: "bench", Limit: 300, Window: time.Hour}
	e, err := NewEmbedded(ctx, EmbeddedConfig{Nodes: 3, Node: cluster.Config{Policies: []bucket.Policy{p}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	if len(e.Nodes()) != 3 {
		t.Fatalf("%d nodes", len(e.Nodes()))
	}
	res, err := Run(ctx, Config{Target: e, Policy: "bench", PolicySpec: &p, Dist: Hot, Requests: 1500, Concurrency: 6, Seed: 15})
	if err != nil {
		t.Fatal(err)
	}
	if a := res.Accuracy; res.Errors != 0 || a.OverAdmitted != 0 || a.UnderAdmitted != 0 || a.AllowedHits != 300 {
		t.Errorf("errors %v accuracy %+v", res.ErrorKinds, a)
	}
}
