package cluster_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/cluster/ring"
	"github.com/vibewell/ratelimit/internal/testcluster"
)

// successorOf returns the node that would own key under policy if its
// owner failed, and the third node of a 3-node cluster.
func successorOf(t *testing.T, c *testcluster.Cluster, policy, key string) (owner, succ, other int) {
	t.Helper()
	owner = c.Owner(policy, key)
	var names []string
	for _, i := range c.Live() {
		if i != owner {
			names = append(names, c.Node(i).Name())
		}
	}
	enc, _ := bucket.Key{Policy: policy, ID: key}.AppendBinary(nil)
	name := ring.New(names, ring.Config{}).Owner(enc)
	succ, other = -1, -1
	for _, i := range c.Live() {
		switch {
		case i == owner:
		case c.Node(i).Name() == name:
			succ = i
		default:
			other = i
		}
	}
	return owner, succ, other
}

// noProbes keeps every member in the ring however loaded the machine:
// the nodes never probe each other, so no member is taken for dead.
func noProbes(i int, cfg *cluster.Config) { cfg.Gossip.ProbeInterval = time.Hour }

// keyOwnedBy returns a key of policy that node i owns.
func keyOwnedBy(c *testcluster.Cluster, policy string, i int) string {
	for j := 0; ; j++ {
		if k := "k" + strconv.Itoa(j); c.Owner(policy, k) == i {
			return k
		}
	}
}

// TestClusterSlowOwnerIsWaitedFor: every check to one owner takes longer
// than ForwardTimeout (a loaded machine), but the owner is a member and
// its connection stands: the checks wait for it, and exactly the limit is
// admitted, with no error. (Before, a forward past ForwardTimeout fell
// back to the local share: over the limit.)
func TestClusterSlowOwnerIsWaitedFor(t *testing.T) {
	const limit = 20
	policies := []bucket.Policy{{Name: "p", Limit: limit, Window: time.Hour}}
	c := testcluster.Start(t, 3, testcluster.Options{Policies: policies, InMemory: true, Configure: func(i int, cfg *cluster.Config) {
		cfg.ForwardTimeout = 10 * time.Millisecond
		cfg.Gossip.ProbeInterval = time.Hour // a member stays one, however loaded the machine
	}})
	key := keyOwnedBy(c, "p", 0)
	c.Delay(0, 60*time.Millisecond)
	defer c.Delay(0, 0)
	var allowed, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for range 8 {
				d, err := c.Node(1+w%2).Allow(context.Background(), "p", key, 1)
				switch {
				case err != nil:
					failed.Add(1)
				case d.Allowed:
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if allowed.Load() != limit || failed.Load() != 0 {
		t.Fatalf("slow owner: %d allowed, %d failed; want exactly %d allowed and none failed", allowed.Load(), failed.Load(), limit)
	}
}

// TestClusterFailoverToSuccessor: the owner cannot be reached from one
// node (a cut link), but it is still a member. That node's checks go to
// the key's successor, which decides against its copy of the counter: a
// used-up key stays denied, where the local share would have admitted
// limit/3. Once the link is back, the hits the successor admitted are
// folded back into the owner's counter.
func TestClusterFailoverToSuccessor(t *testing.T) {
	const limit = 30
	policies := []bucket.Policy{{Name: "p", Limit: limit, Window: time.Hour}}
	c := testcluster.Start(t, 3, testcluster.Options{Policies: policies, InMemory: true, Configure: noProbes})
	ctx := context.Background()
	key := "f"
	owner, succ, other := successorOf(t, c, "p", key)
	// 20 hits through the owner, copied to the successor.
	if d, err := c.Node(other).Allow(ctx, "p", key, 20); err != nil || !d.Allowed {
		t.Fatalf("first hits: %+v %v", d, err)
	}
	waitFor(t, "the copy", func() bool { return c.Node(succ).Status().ReplicaCounters >= 1 })
	c.Partition([]int{other}, []int{owner})
	allowed := 0
	for range 15 {
		d, err := c.Node(other).Allow(ctx, "p", key, 1)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			allowed++
		}
	}
	if allowed != limit-20 {
		t.Fatalf("owner cut off: the successor admitted %d, want the %d left", allowed, limit-20)
	}
	c.Heal()
	// The owner gets the successor's 10 hits back: the key is used up there.
	waitFor(t, "the fold-back", func() bool {
		d, err := c.Node(owner).Allow(ctx, "p", key, 0)
		return err == nil && !d.Allowed
	})
	if d, _ := c.Node(other).Allow(ctx, "p", key, 1); d.Allowed {
		t.Fatalf("after the fold-back, a used-up key was allowed: %+v", d)
	}
}

// TestClusterSyncReplicationSurvivesCrash: with "replication": "sync", an
// allowed check is answered only once the successor has its change; the
// owner crashes the moment the key is used up, and no further check is
// allowed, before or after the ring drops it.
func TestClusterSyncReplicationSurvivesCrash(t *testing.T) {
	const limit = 10
	policies := []bucket.Policy{{Name: "auth", Limit: limit, Window: 15 * time.Minute, Replication: bucket.ReplicateSync}}
	c := testcluster.Start(t, 3, testcluster.Options{Policies: policies})
	ctx := context.Background()
	const keys = 5
	var mine []string
	for j := 0; len(mine) < keys; j++ {
		if k := "ip:" + strconv.Itoa(j); c.Owner("auth", k) == 0 {
			mine = append(mine, k)
		}
	}
	for _, k := range mine {
		for range limit {
			if d, err := c.Node(1).Allow(ctx, "auth", k, 1); err != nil || !d.Allowed {
				t.Fatalf("using up %s: %+v %v", k, d, err)
			}
		}
	}
	c.Kill(0)
	check := func(when string) {
		for _, k := range mine {
			for _, i := range []int{1, 2} {
				d, err := c.Node(i).Allow(ctx, "auth", k, 1)
				if err != nil {
					t.Fatalf("%s: %v", when, err)
				}
				if d.Allowed {
					t.Fatalf("%s: a used-up key %s was allowed by node %d", when, k, i)
				}
			}
		}
	}
	check("before the crash is detected")
	c.WaitConverged()
	check("after the ring dropped the owner")
}

// TestClusterFailureModeNeedsBothUnreachable: the policy's failure mode
// decides only when neither the owner nor the successor can answer.
func TestClusterFailureModeNeedsBothUnreachable(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly, InMemory: true, Configure: noProbes})
	ctx := context.Background()
	for _, tc := range []struct {
		policy  string
		allowed int
	}{
		{"open", 25},  // everything passes
		{"closed", 0}, // nothing passes
		{"local", 10}, // limit 30 over 3 nodes: 10 on this node alone
	} {
		t.Run(tc.policy, func(t *testing.T) {
			key := "p-" + tc.policy
			owner, succ, other := successorOf(t, c, tc.policy, key)
			c.Partition([]int{other}, []int{owner, succ})
			defer c.Heal()
			n := 0
			for range 25 {
				d, err := c.Node(other).Allow(ctx, tc.policy, key, 1)
				if err != nil {
					t.Fatal(err)
				}
				if d.Allowed {
					n++
				}
			}
			if n != tc.allowed {
				t.Fatalf("%s: %d of 25 allowed while owner and successor are unreachable, want %d", tc.policy, n, tc.allowed)
			}
		})
	}
	// Healed: the owner decides again, with its own (untouched) counter.
	key := "p-closed"
	_, _, other := successorOf(t, c, "closed", key)
	d, err := c.Node(other).Allow(ctx, "closed", key, 1)
	if err != nil || !d.Allowed || d.Remaining != 9 {
		t.Fatalf("after healing: %+v %v, want allowed with 9 remaining", d, err)
	}
}

// TestClusterCopyNotDeliveredFallsBack: the owner of a key is cut off
// from its peers (gossip still up, so it stays the owner). Its checks can
// no longer be copied to the successor, which the other side of a
// partition would decide the key from, so none is answered allowed on the
// owner's counter alone: the failure mode decides them (here `local`, a
// third of the limit on this node). A sync policy's checks fall back at
// once; an async one's once rounds of copies to more than half of the
// other members have failed (a single crashed successor is not enough).
func TestClusterCopyNotDeliveredFallsBack(t *testing.T) {
	const limit = 30
	policies := []bucket.Policy{
		{Name: "s", Limit: limit, Window: time.Hour, Replication: bucket.ReplicateSync},
		{Name: "a", Limit: limit, Window: time.Hour},
	}
	c := testcluster.Start(t, 3, testcluster.Options{Policies: policies, InMemory: true, Configure: noProbes})
	ctx := context.Background()
	// One key of node 0 per successor: their copies go to both others.
	bySucc := map[int]string{}
	for j := 0; len(bySucc) < 2; j++ {
		k := "k" + strconv.Itoa(j)
		if owner, succ, _ := successorOf(t, c, "a", k); owner == 0 {
			bySucc[succ] = k
		}
	}
	c.Partition([]int{0}, []int{1, 2})
	defer c.Heal()
	allow := func(p, key string) bool {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		d, err := c.Node(0).Allow(cctx, p, key, 1)
		if err != nil {
			t.Fatal(err)
		}
		return d.Allowed
	}
	// A single failing successor: still decided on the counter.
	if !allow("a", bySucc[1]) {
		t.Fatal("first check denied")
	}
	waitFor(t, "a failed round of copies", func() bool { return c.Node(0).CopiesFailing() == 1 })
	if !allow("a", bySucc[1]) {
		t.Fatal("with one successor unreachable, a check within the limit was denied")
	}
	// Both: the failure mode decides.
	if !allow("a", bySucc[2]) {
		t.Fatal("first check of the second key denied")
	}
	waitFor(t, "failed rounds to both successors", func() bool { return c.Node(0).CopiesFailing() == 2 })
	for _, tc := range []struct {
		policy, key string
		allowed     int // so far
	}{{"a", bySucc[1], 2}, {"s", keyOwnedBy(c, "s", 0), 0}} {
		allowed := tc.allowed
		for range limit - tc.allowed {
			if allow(tc.policy, tc.key) {
				allowed++
			}
		}
		// The local share is counted apart from the counter: up to a
		// third of the limit, whatever the counter took before.
		if want := tc.allowed + limit/3; allowed != want {
			t.Errorf("%s: owner cut off from its successors: %d of %d checks allowed, want %d", tc.policy, allowed, limit, want)
		}
	}
}

// TestClusterCopyEvery: an async counter is copied to its successor once
// the hits since its last copy reach bucket.CopyEvery: a limit of 2^20
// copies every 1024 hits, so 1023 checks send nothing, and the 1024th
// sends exactly that counter; a limit below 2048 copies every hit. What a
// crashed owner's successor can miss is so bounded by limit/1024 hits
// plus one round (docs/architecture.md).
func TestClusterCopyEvery(t *testing.T) {
	policies := []bucket.Policy{
		{Name: "big", Limit: 1 << 20, Window: time.Hour},
		{Name: "small", Limit: 2047, Window: time.Hour},
	}
	c := testcluster.Start(t, 3, testcluster.Options{Policies: policies, InMemory: true, Configure: noProbes})
	ctx := context.Background()
	key := keyOwnedBy(c, "big", 0)
	_, succ, _ := successorOf(t, c, "big", key)
	sent := func() uint64 {
		var n uint64
		for _, i := range c.Live() {
			n += c.Node(i).ReplicasSent()
		}
		return n
	}
	before := sent()
	for i := range 1023 {
		if d, err := c.Node(0).Allow(ctx, "big", key, 1); err != nil || !d.Allowed {
			t.Fatalf("check %d: %+v %v", i, d, err)
		}
	}
	// A round would have left at once: 200 ms is many rounds' time.
	time.Sleep(200 * time.Millisecond)
	if got := sent() - before; got != 0 || c.Node(succ).Status().ReplicaCounters != 0 {
		t.Fatalf("1023 hits below CopyEvery sent %d copies; the successor keeps %d", got, c.Node(succ).Status().ReplicaCounters)
	}
	if d, err := c.Node(0).Allow(ctx, "big", key, 1); err != nil || !d.Allowed {
		t.Fatalf("check 1024: %+v %v", d, err)
	}
	waitFor(t, "the 1024th hit's copy", func() bool { return sent()-before >= 1 })
	time.Sleep(50 * time.Millisecond)
	if got := sent() - before; got != 1 || c.Node(succ).Status().ReplicaCounters != 1 {
		t.Fatalf("the hit reaching CopyEvery sent %d copies, want 1; the successor keeps %d", got, c.Node(succ).Status().ReplicaCounters)
	}

	small := keyOwnedBy(c, "small", 0)
	for i := range 3 {
		before := sent()
		if d, err := c.Node(0).Allow(ctx, "small", small, 1); err != nil || !d.Allowed {
			t.Fatalf("small check %d: %+v %v", i, d, err)
		}
		waitFor(t, "the copy of a hit below a capacity of 2048", func() bool { return sent()-before >= 1 })
	}
}
