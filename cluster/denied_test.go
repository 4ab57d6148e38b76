package cluster_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
)

// TestTopDeniedAcrossTheCluster denies one key from every node and a few
// others from one: any node's TopDenied merges every member's counts.
func TestTopDeniedAcrossTheCluster(t *testing.T) {
	pol := []bucket.Policy{{Name: "auth", Limit: 2, Window: time.Hour}, {Name: "other", Limit: 100, Window: time.Hour}}
	c := testcluster.Start(t, 3, testcluster.Options{Policies: pol})
	ctx := context.Background()
	// "ip:hot": 3 allowed-then-denied rounds on each node: 2 allowed in
	// all, 3*5-2 = 13 denied.
	for i := range 3 {
		for range 5 {
			if _, err := c.Node(i).Allow(ctx, "auth", "ip:hot", 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	// "ip:warm": 2 allowed, 3 denied, on node 1 only; "ip:cold": never denied.
	for range 5 {
		c.Node(1).Allow(ctx, "auth", "ip:warm", 1)
	}
	c.Node(2).Allow(ctx, "auth", "ip:cold", 1)
	for i := range 3 {
		top, err := c.Node(i).TopDenied(ctx, "auth", 5*time.Minute, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(top.Nodes) != 3 || len(top.Missing) != 0 {
			t.Fatalf("node %d: answered by %v, missing %v; want all 3", i, top.Nodes, top.Missing)
		}
		if len(top.Keys) != 2 || top.Keys[0].Key != "ip:hot" || top.Keys[0].Count != 13 || top.Keys[1].Key != "ip:warm" || top.Keys[1].Count != 3 {
			t.Fatalf("node %d: top %+v, want ip:hot=13, ip:warm=3", i, top.Keys)
		}
		if top.Denied != 16 || top.Window != 5*time.Minute {
			t.Fatalf("node %d: denied %d over %v, want 16 over 5m", i, top.Denied, top.Window)
		}
	}
	if top, _ := c.Node(0).TopDenied(ctx, "other", time.Minute, 10); len(top.Keys) != 0 {
		t.Fatalf("policy without denials lists %+v", top.Keys)
	}
	if _, err := c.Node(0).TopDenied(ctx, "nope", time.Minute, 10); !errors.Is(err, cluster.ErrUnknownPolicy) {
		t.Fatalf("unknown policy: %v", err)
	}
	if _, err := c.Node(0).TopDenied(ctx, "auth", 16*time.Minute, 10); !errors.Is(err, cluster.ErrInvalidWindow) {
		t.Fatalf("16m window: %v", err)
	}

	// Locate names the same owner from every node, a different successor,
	// and the owner's counter, unchanged by the reading.
	owner := c.Node(c.Owner("auth", "ip:hot")).Name()
	for i := range 3 {
		loc, err := c.Node(i).Locate(ctx, "auth", "ip:hot")
		if err != nil {
			t.Fatal(err)
		}
		if loc.Owner != owner || loc.Successor == "" || loc.Successor == owner || loc.CounterError != "" {
			t.Fatalf("node %d: %+v; want owner %s and another successor", i, loc, owner)
		}
		if loc.Counter.Remaining != 0 || loc.Counter.Limit != 2 {
			t.Fatalf("node %d: counter %+v, want 0 of 2 left", i, loc.Counter)
		}
	}
	if _, err := c.Node(0).Locate(ctx, "auth", ""); !errors.Is(err, cluster.ErrInvalidKey) {
		t.Fatalf("empty key: %v", err)
	}

	// The overview sums every member's decisions: 21 checks of auth, 16
	// denied, whichever node is asked.
	c.Leader()
	ov := c.Node(2).Overview(ctx)
	roles := func(ov cluster.Overview) bool {
		for _, m := range ov.Members {
			if m.Role == "" {
				return false
			}
		}
		return ov.Leader != ""
	}
	for deadline := time.Now().Add(15 * time.Second); !roles(ov) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // the leader adds the voters; node 2 hears of it
		ov = c.Node(2).Overview(ctx)
	}
	if len(ov.Members) != 3 || len(ov.Nodes) != 3 || ov.Leader == "" {
		t.Fatalf("overview: %d members, counts of %v, leader %q", len(ov.Members), ov.Nodes, ov.Leader)
	}
	share := 0.0
	for _, m := range ov.Members {
		if m.RingShare <= 0 || m.Role == "" {
			t.Errorf("member %+v: want a ring share and a raft role", m)
		}
		share += m.RingShare
	}
	if share < 0.999 || share > 1.001 {
		t.Errorf("ring shares sum to %v", share)
	}
	if got := ov.Counts.Policies["auth"]; got.Denied != 16 || got.Allowed != 5 {
		t.Fatalf("auth counts %+v, want 5 allowed and 16 denied", got)
	}
}

// BenchmarkTopDenied is the check path with the denial counting off and
// on, in the same run (cpu-ns/op is the process's CPU time per check, the
// figure to compare on a loaded machine): "allowed" checks (the common case, which only test
// the decision), "denied-hot" (every check denied and counted, 8 keys:
// each count finds its key) and "denied-spread" (keys rotating over 1000,
// more than the sketch's slots: each count evicts a key, the worst case).
func BenchmarkTopDenied(b *testing.B) {
	for _, path := range []struct {
		name  string
		limit int64
		keys  int
	}{{"allowed", 1 << 31, 1000}, {"denied-hot", 1, 8}, {"denied-spread", 1, 1000}} {
		for _, c := range []struct {
			name  string
			slots int
		}{{"topk=off", -1}, {"topk=on", 0}} {
			b.Run(path.name+"/"+c.name, func(b *testing.B) {
				n, err := cluster.Start(context.Background(), cluster.Config{
					Policies:       []bucket.Policy{{Name: "p", Limit: path.limit, Window: time.Hour}},
					TopDeniedSlots: c.slots,
				})
				if err != nil {
					b.Fatal(err)
				}
				defer n.Close(context.Background())
				keys := make([]string, path.keys)
				for i := range keys {
					keys[i] = "ip:10.1." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)
					n.Allow(context.Background(), "p", keys[i], 1)
				}
				ctx := context.Background()
				var seq atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				cpu := processCPU()
				b.RunParallel(func(pb *testing.PB) {
					i := int(seq.Add(1)) * 7919
					for pb.Next() {
						i++
						if d, _ := n.Allow(ctx, "p", keys[i%len(keys)], 1); d.Allowed != (path.limit > 1) {
							b.Fatalf("allowed %v", d.Allowed)
						}
					}
				})
				b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}
