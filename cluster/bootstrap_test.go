package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
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
