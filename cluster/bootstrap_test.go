package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/cluster/ring"
)

// TestBootstrap: the node with Bootstrap starts the cluster although its
// seeds do not answer (they are the nodes still to come): it is Ready at
// once and raft's leader, with a cluster key it made; a node that joins
// it with that key gets the policy table, and a change made there is
// committed. Without Bootstrap, a node whose seeds do not answer waits
// for them.
func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	unreachable := []string{"127.0.0.1:1"} // nothing listens on port 1
	cfg := cluster.LocalConfig()
	cfg.NodeName, cfg.Seeds = "first", unreachable
	cfg.Bootstrap = true
	a := start(t, cfg)
	if !a.Ready() {
		t.Fatal("the bootstrapping node is not Ready on return")
	}
	key, generated := a.ClusterKey()
	if !generated {
		t.Fatal("the bootstrapping node made no cluster key")
	}
	waitFor(t, "the first node to lead", func() bool {
		st := a.Status()
		return st.Raft != nil && st.Raft.State == "leader"
	})

	cfg = cluster.LocalConfig()
	cfg.NodeName, cfg.Seeds, cfg.ClusterKey = "second", []string{a.Addrs().Gossip}, key
	b := start(t, cfg)
	waitFor(t, "both nodes in both rings", func() bool {
		return a.Status().RingMembers == 2 && b.Status().RingMembers == 2 && b.Ready()
	})
	p := bucket.Policy{Name: "joined", Limit: 7, Window: time.Minute}
	if err := b.SetPolicy(ctx, p); err != nil {
		t.Fatalf("a policy change through the joined node: %v", err)
	}
	waitFor(t, "the change on the first node", func() bool {
		got, ok := a.Policy("joined")
		return ok && got.Limit == 7
	})

	cfg = cluster.LocalConfig()
	cfg.NodeName, cfg.Seeds, cfg.Insecure = "waiting", unreachable, true
	c := start(t, cfg)
	if c.Ready() {
		t.Fatal("a node without Bootstrap whose seeds do not answer is Ready")
	}
}

// TestRingConfigMismatchRefused: a node whose ring config differs from the
// cluster's would pick other owners for the same keys; the cluster refuses
// it (counted as a refusal on the gossip port) and its Start fails with
// ErrRingConfig, so the two never mix.
func TestRingConfigMismatchRefused(t *testing.T) {
	cfg := cluster.LocalConfig()
	cfg.NodeName, cfg.Insecure = "first", true
	a := start(t, cfg)

	cfg = cluster.LocalConfig()
	cfg.NodeName, cfg.Insecure, cfg.Seeds = "other-ring", true, []string{a.Addrs().Gossip}
	cfg.Ring.PartitionCount = 271
	b, err := cluster.Start(context.Background(), cfg)
	if err == nil {
		b.Close(context.Background())
		t.Fatal("a node with another ring config joined")
	}
	if !errors.Is(err, cluster.ErrRingConfig) {
		t.Fatalf("Start: %v, want ErrRingConfig", err)
	}
	// The member sends its state before it merges (and refuses) the
	// joiner's, so its count can come a moment after the joiner's error.
	waitFor(t, "the cluster's count of the ring_config refusal", func() bool { return a.Refused("gossip", "ring_config") > 0 })
	time.Sleep(time.Second) // time for any gossip that got through
	if ms := a.Status().Members; len(ms) != 1 || a.Status().RingMembers != 1 {
		t.Errorf("the cluster's members after the refusal: %+v", ms)
	}

	// The same ring config, spelt out, is the same.
	cfg.NodeName, cfg.Ring = "same-ring", ring.Config{PartitionCount: 4099}
	c := start(t, cfg)
	waitFor(t, "the node with the same ring", func() bool { return a.Status().RingMembers == 2 && c.Ready() })
}
