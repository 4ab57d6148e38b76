package cluster_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
)

func TestRefundSingleNode(t *testing.T) {
	ctx := context.Background()
	n, err := cluster.Start(ctx, cluster.Config{Policies: hourly})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	if d, err := n.Allow(ctx, "small", "k", 50); err != nil || !d.Allowed {
		t.Fatalf("using up: %+v %v", d, err)
	}
	d, err := n.Refund(ctx, "small", "k", 3)
	if err != nil || d.Remaining != 3 || !d.Allowed {
		t.Fatalf("refund 3: %+v %v, want 3 remaining", d, err)
	}
	if d, _ := n.Allow(ctx, "small", "k", 4); d.Allowed {
		t.Fatalf("4 hits after a refund of 3 allowed: %+v", d)
	}
	if d, err := n.Refund(ctx, "small", "k", cluster.RefundAll); err != nil || d.Remaining != 50 {
		t.Fatalf("reset: %+v %v", d, err)
	}
	if d, _ := n.Allow(ctx, "small", "k", 50); !d.Allowed {
		t.Fatalf("a full limit after the reset: %+v", d)
	}
	for _, tc := range []struct {
		policy, key string
		hits        int64
		want        error
	}{
		{"nope", "k", 1, cluster.ErrUnknownPolicy},
		{"small", "", 1, cluster.ErrInvalidKey},
		{"small", "k", -1, cluster.ErrInvalidHits},
		{"small", "k", cluster.DefaultMaxHits + 1, cluster.ErrInvalidHits},
	} {
		if _, err := n.Refund(ctx, tc.policy, tc.key, tc.hits); !errors.Is(err, tc.want) {
			t.Errorf("refund %+v: %v, want %v", tc, err, tc.want)
		}
	}
	if d, _ := n.Allow(ctx, "small", "k", 0); d.Remaining != 0 {
		t.Fatalf("a refused refund changed the counter: %+v", d)
	}
}

// TestRefundRoutedToOwner: refunds and resets made on any node reach the
// key's owner, one call per owner for a batch, and the owner's successor
// drops the hits from its copy too, so that the owner's crash does not
// bring them back.
func TestRefundRoutedToOwner(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly, Configure: func(i int, cfg *cluster.Config) {
		cfg.ReplicaInterval = 20 * time.Millisecond
		cfg.ForwardTimeout = 5 * time.Second // a busy machine must not make checks fall back
	}})
	ctx := context.Background()
	const limit = 50 // "small"
	// A key owned by each node.
	keys := make([]string, 3)
	for i, found := 0, 0; found < 3; i++ {
		k := "r" + strconv.Itoa(i)
		if o := c.Owner("small", k); keys[o] == "" {
			keys[o] = k
			found++
		}
	}
	for o, k := range keys {
		useUpOwned(t, c.Node((o+1)%3), k, limit)
	}
	// Refund 5 of each key from a node that does not own it.
	out := make([]cluster.Result, 3)
	batch := make([]cluster.Request, 3)
	for o, k := range keys {
		batch[o] = cluster.Request{Policy: "small", Key: k, Hits: 5}
	}
	if err := c.Node(0).RefundBatch(ctx, batch, out); err != nil {
		t.Fatal(err)
	}
	for o, r := range out {
		if r.Err != nil || r.Remaining != 5 {
			t.Fatalf("refund of %s (owner %d): %+v", keys[o], o, r)
		}
		// The owner holds the refunded counter: its own peek sees it.
		if d, _ := c.Node(o).Allow(ctx, "small", keys[o], 0); d.Remaining != 5 {
			t.Fatalf("owner %d sees %d remaining after the refund, want 5", o, d.Remaining)
		}
	}
	// Reset node 1's key from node 2, once its copy is at its successor.
	victim, key := 1, keys[1]
	waitFor(t, "the copies", func() bool {
		n := 0
		for _, i := range c.Live() {
			n += c.Node(i).Status().ReplicaCounters
		}
		return n >= 3
	})
	if d, err := c.Node(2).Refund(ctx, "small", key, cluster.RefundAll); err != nil || d.Remaining != limit {
		t.Fatalf("reset: %+v %v", d, err)
	}
	if d, _ := c.Node(victim).Allow(ctx, "small", key, 0); d.Remaining != limit {
		t.Fatalf("the owner sees %d remaining after the reset, want %d", d.Remaining, limit)
	}
	c.Kill(victim)
	c.WaitConverged()
	via := 0
	if d, err := c.Node(via).Allow(ctx, "small", key, 0); err != nil || d.Remaining != limit {
		t.Fatalf("after the owner's crash the reset key has %d remaining (%v), want %d: the copy brought its hits back", d.Remaining, err, limit)
	}
	// A refund whose owner is gone and not yet detected fails; it is not
	// made up by a failure mode. Here the ring has converged, so the
	// refund reaches the new owner.
	if _, err := c.Node(via).Refund(ctx, "small", keys[0], 1); err != nil {
		t.Fatal(err)
	}
}

// useUpOwned takes the whole limit of key through n, at its owner: a check that
// a busy machine made fall back to the local failure mode (a share, not
// counted at the owner) is made again.
func useUpOwned(t *testing.T, n *cluster.Node, key string, limit int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, err := n.Allow(context.Background(), "small", key, limit)
		if err != nil {
			t.Fatalf("using up %s: %v", key, err)
		}
		if d.Allowed && d.Limit == limit {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("using up %s: %+v, still the failure mode's answer after 30 s", key, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRefundOwnerUnavailable: a refund whose owner cannot be reached is
// not made, and its error is ErrOwnerUnavailable to errors.Is (a check of
// the same key is decided by a stand-in instead).
func TestRefundOwnerUnavailable(t *testing.T) {
	c := testcluster.Start(t, 2, testcluster.Options{InMemory: true, Policies: []bucket.Policy{
		{Name: "small", Algorithm: bucket.FixedWindow, Limit: 10, Window: time.Minute, FailureMode: bucket.FailOpen},
	}})
	ctx := context.Background()
	key := ""
	for k := 0; key == ""; k++ {
		if c.Owner("small", "u"+strconv.Itoa(k)) == 1 {
			key = "u" + strconv.Itoa(k)
		}
	}
	c.Partition([]int{0}, []int{1})
	_, err := c.Node(0).Refund(ctx, "small", key, 1)
	if !errors.Is(err, cluster.ErrOwnerUnavailable) {
		t.Fatalf("refund to an unreachable owner: %v, want ErrOwnerUnavailable", err)
	}
	if _, err := c.Node(0).Allow(ctx, "small", key, 1); err != nil {
		t.Fatalf("a check of the same key: %v, want a decision", err)
	}
}
