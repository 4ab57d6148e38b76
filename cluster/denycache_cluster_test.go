package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
)

// A node that forwarded a check its owner denied answers the key's next
// checks itself until the retry time; a policy edit ends that at once, and /metrics shows it.
func TestClusterDenialsAnsweredWhereTheyArrive(t *testing.T) {
	regs := make([]*prometheus.Registry, 3)
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly, Configure: func(i int, cfg *cluster.Config) {
		regs[i] = prometheus.NewRegistry()
		cfg.Metrics = regs[i]
		cfg.ForwardTimeout = 10 * time.Second
		cfg.Gossip = cluster.GossipConfig{GossipInterval: 20 * time.Millisecond}
	}})
	ctx := context.Background()
	const key = "ip:203.0.113.9"
	owner := c.Owner("small", key)
	via := (owner + 1) % 3
	n := c.Node(via)
	if d, err := n.Allow(ctx, "small", key, 50); err != nil || !d.Allowed {
		t.Fatalf("using up the key: %+v, %v", d, err)
	}
	for i := range 100 {
		d, err := n.Allow(ctx, "small", key, 1)
		if err != nil || d.Allowed || d.RetryAfter <= 0 {
			t.Fatalf("check %d after the limit: %+v, %v; want a denial with a retry time", i, d, err)
		}
	}
	hits := gaugeOrCounter(t, regs[via], "ratelimit_deny_cache_hits_total", "", "")
	denied := counterValue(t, regs[via], "small", "denied")
	if hits != 99 || denied != 100 {
		t.Fatalf("%v of %v denials answered from the cache; want 99 of 100 (the first is the owner's)", hits, denied)
	}

	// Raising the limit ends the cached denial on this node at once.
	p, _ := n.Policy("small")
	p.Limit = 60
	if err := n.SetPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if q, _ := c.Node(owner).Policy("small"); q.Limit == 60 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the owner never applied the edit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d, err := n.Allow(ctx, "small", key, 1); err != nil || !d.Allowed || d.Remaining != 9 {
		t.Fatalf("after raising the limit to 60: %+v, %v; want allowed with 9 remaining", d, err)
	}
}
