package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
)

var hourly = []bucket.Policy{
	{Name: "default", Limit: 1000, Window: time.Hour},
	{Name: "small", Limit: 50, Window: time.Hour},
	{Name: "open", Limit: 10, Window: time.Hour, FailureMode: bucket.FailOpen},
	{Name: "closed", Limit: 10, Window: time.Hour, FailureMode: bucket.FailClosed},
	{Name: "local", Limit: 30, Window: time.Hour, FailureMode: bucket.FailLocal},
	{Name: "sync", Limit: 30, Window: time.Hour, Replication: bucket.ReplicateSync},
}

// hammer sends total checks of key, spread over the live nodes from
// workers goroutines, and returns how many were allowed and failed.
func hammer(t *testing.T, c *testcluster.Cluster, policy, key string, total, workers int) (allowed, failed int64) {
	t.Helper()
	live := c.Live()
	var a, f atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(total) {
					return
				}
				n := c.Node(live[int(i)%len(live)])
				if n == nil {
					f.Add(1)
					continue
				}
				d, err := n.Allow(context.Background(), policy, key, 1)
				switch {
				case err != nil:
					f.Add(1)
				case d.Allowed:
					a.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return a.Load(), f.Load()
}

func TestClusterExact(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			c := testcluster.Start(t, size, testcluster.Options{Policies: hourly})
			// Every node agrees on the owner of every key.
			for k := range 500 {
				key := "user:" + strconv.Itoa(k)
				want := c.Node(0).Owner("default", key)
				for _, i := range c.Live() {
					if got := c.Node(i).Owner("default", key); got != want {
						t.Fatalf("key %s: node %d says %s owns it, node 0 says %s", key, i, got, want)
					}
				}
			}
			// One key of limit 1000, 5000 concurrent checks over all nodes.
			allowed, failed := hammer(t, c, "default", "hot", 5000, 200)
			if failed != 0 || allowed != 1000 {
				t.Fatalf("%d nodes: allowed %d (failed %d) of 5000 checks on a key of limit 1000, want exactly 1000", size, allowed, failed)
			}
		})
	}
}

// TestClusterGracefulLeaveKeepsLimits: a node that leaves hands its
// counters to the new owners, so its keys keep their counts.
func TestClusterGracefulLeaveKeepsLimits(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly})
	ctx := context.Background()
	const keys = 40
	owned := map[string]int{}
	for k := range keys {
		key := "ip:" + strconv.Itoa(k)
		owned[key] = c.Owner("small", key)
		for range 30 {
			c.Node(0).Allow(ctx, "small", key, 1)
		}
	}
	leaver := c.Owner("small", "ip:0")
	c.Leave(leaver)
	c.WaitConverged()
	live := c.Live()
	for k := range keys {
		key := "ip:" + strconv.Itoa(k)
		d, err := c.Node(live[0]).Allow(ctx, "small", key, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d.Remaining != 20 {
			t.Errorf("key %s (owned by node %d before the leave): remaining %d after the leave, want 20", key, owned[key], d.Remaining)
		}
	}
}

// exhaustKeys checks each key k0, k1, ... of policy "small" round-robin
// over the live nodes until one check is denied (at most 3×limit checks),
// adding the checks allowed to allowed[k].
func exhaustKeys(t *testing.T, c *testcluster.Cluster, limit int, allowed []atomic.Int64) {
	t.Helper()
	live := c.Live()
	for k := range allowed {
		for j := 0; j < 3*limit; j++ {
			d, err := c.Node(live[j%len(live)]).Allow(context.Background(), "small", "k"+strconv.Itoa(k), 1)
			if err != nil {
				t.Fatal(err)
			}
			if !d.Allowed {
				break
			}
			allowed[k].Add(1)
		}
	}
}

// TestClusterJoinAndLeaveUnderLoad runs checks on many keys while a node
// joins and another leaves, then checks every key to exhaustion. A key
// whose owner changes is decided by one node at a time, from the counter
// that holds all its hits (the hand-over, handover.go), and a leaving node
// answers every check it was sent before it closes: each key admits
// exactly its limit.
func TestClusterJoinAndLeaveUnderLoad(t *testing.T) {
	var logs nodeLog
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly, Logger: logs.logger(), Configure: logs.configure})
	defer logs.dump(t)
	const keys, limit, callers = 30, 50, 8
	var allowed [keys]atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range callers {
		wg.Go(func() {
			for i := 0; i < 200_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				live := c.Live()
				n := c.Node(live[(w+i)%len(live)])
				if n == nil {
					continue
				}
				k := (w*7 + i) % keys
				d, err := n.Allow(context.Background(), "small", "k"+strconv.Itoa(k), 1)
				switch {
				case errors.Is(err, cluster.ErrClosed):
					// Closed under the caller: not decided.
				case err != nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				case d.Allowed:
					allowed[k].Add(1)
				}
			}
		})
	}
	waitAllowed := func(total int64) {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			var sum int64
			for k := range keys {
				sum += allowed[k].Load()
			}
			if sum >= total {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	owners := ownerSteps{}
	owners.record(c, keys)
	waitAllowed(keys * limit / 3)
	t.Logf("%s: a node joins", time.Now().Format("15:04:05.000"))
	c.Add()
	c.WaitConverged()
	owners.record(c, keys)
	waitAllowed(keys * limit * 2 / 3)
	t.Logf("%s: node 0 leaves", time.Now().Format("15:04:05.000"))
	logs.snapshot("before node 0 leaves")
	c.Leave(0)
	c.WaitConverged()
	owners.record(c, keys)
	waitAllowed(keys * limit)
	close(stop)
	wg.Wait()
	// Exhaust every key on the settled ring, so each has had the chance to
	// reach its limit.
	exhaustKeys(t, c, limit, allowed[:])
	var over, worst, under int64
	for k := range keys {
		a := allowed[k].Load()
		if a > limit {
			over += a - limit
			worst = max(worst, a-limit)
		}
		if a < limit {
			under += limit - a
		}
		if a != limit {
			t.Errorf("key %d: allowed %d, want exactly its limit %d (checked to exhaustion); owners by step %v", k, a, limit, owners[k])
			logs.also = append(logs.also, "key=k"+strconv.Itoa(k)+" ")
		}
	}
	t.Logf("join + graceful leave under load: over-admission %d hits over %d keys of limit %d (worst key +%d), under-admission %d hits", over, keys, limit, worst, under)
	if f := failed.Load(); f > 0 {
		t.Errorf("%d checks failed; first: %v", f, firstErr.Load())
	}
}

// TestClusterKillOwner: the owner of a key crashes; its checks go to the
// key's successor, which decides on its copy of the counter until the
// ring drops the owner, then owns the key with that copy as its counter.
// With sync replication, no more than the limit is admitted.
func TestClusterKillOwner(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly})
	ctx := context.Background()
	key := "victim"
	owner := c.Owner("sync", key)
	var survivors []int
	for _, i := range c.Live() {
		if i != owner {
			survivors = append(survivors, i)
		}
	}
	var allowed int64
	for range 20 {
		if d, _ := c.Node(survivors[0]).Allow(ctx, "sync", key, 1); d.Allowed {
			allowed++
		}
	}
	c.Kill(owner)
	// During detection, checks do not fail: the key's successor decides on
	// its copy of the counter.
	errs := 0
	for range 100 {
		for _, i := range survivors {
			d, err := c.Node(i).Allow(ctx, "sync", key, 1)
			if err != nil {
				errs++
			} else if d.Allowed {
				allowed++
			}
		}
	}
	if errs != 0 {
		t.Fatalf("%d checks failed while the owner was down; the failure mode must decide", errs)
	}
	c.WaitConverged()
	if o := c.Owner("sync", key); o == owner {
		t.Fatalf("the dead node still owns the key")
	}
	for range 100 {
		if d, _ := c.Node(survivors[1]).Allow(ctx, "sync", key, 1); d.Allowed {
			allowed++
		}
	}
	// With sync replication the copy holds every hit the owner admitted.
	bound := int64(30)
	if allowed > bound {
		t.Fatalf("allowed %d across the crash, bound %d", allowed, bound)
	}
	t.Logf("owner killed: allowed %d of limit 30 across the crash (bound %d)", allowed, bound)
}

func TestClusterMembersAndReady(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Configure: func(i int, cfg *cluster.Config) {
		cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", 8000+i)
	}})
	ms := c.Node(1).Status().Members
	if len(ms) != 3 {
		t.Fatalf("members: %+v", ms)
	}
	self := 0
	for _, m := range ms {
		if m.State != "alive" || m.PeerAddr == "" || m.GossipAddr == "" || m.HTTPAddr == "" {
			t.Errorf("member %+v lacks an address or is not alive", m)
		}
		if m.Self {
			self++
		}
	}
	if self != 1 {
		t.Errorf("%d members marked self", self)
	}
	if !c.Node(2).Ready() {
		t.Error("a joined node is not ready")
	}
	// A node whose seeds do not answer is not ready, but still starts.
	n, err := cluster.Start(context.Background(), cluster.Config{
		GossipAddr: "127.0.0.1:0", Gossip: cluster.LocalGossip(), Seeds: []string{"127.0.0.1:1"}, ClusterKey: c.Key(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Halt()
	if n.Ready() {
		t.Error("a node that could not join reports ready")
	}
}

func TestClusterAllowBatch(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly})
	ctx := context.Background()
	// 600 checks over 6 keys of limit 50, each batch sent to one node: every
	// key ends at exactly its limit, wherever it lives.
	var checks []cluster.Request
	for i := range 600 {
		checks = append(checks, cluster.Request{Policy: "small", Key: "b" + strconv.Itoa(i%6), Hits: 1})
	}
	checks = append(checks, cluster.Request{Policy: "nope", Key: "x", Hits: 1}, cluster.Request{Policy: "small", Key: "", Hits: 1})
	allowed := map[string]int{}
	for part := range 3 {
		batch := checks[part*200 : (part+1)*200]
		if part == 2 {
			batch = checks[400:]
		}
		out := make([]cluster.Result, len(batch))
		if err := c.Node(part).AllowBatch(ctx, batch, out); err != nil {
			t.Fatal(err)
		}
		for i, r := range out {
			if r.Err != nil {
				continue
			}
			if r.Allowed {
				allowed[batch[i].Key]++
			}
		}
		if part == 2 {
			if !errors.Is(out[len(out)-2].Err, cluster.ErrUnknownPolicy) || !errors.Is(out[len(out)-1].Err, cluster.ErrInvalidKey) {
				t.Fatalf("bad items: %v / %v", out[len(out)-2].Err, out[len(out)-1].Err)
			}
		}
	}
	for k := range 6 {
		if got := allowed["b"+strconv.Itoa(k)]; got != 50 {
			t.Errorf("key b%d: allowed %d, want 50", k, got)
		}
	}
	owners := map[string]bool{}
	for k := range 6 {
		owners[c.Node(0).Owner("small", "b"+strconv.Itoa(k))] = true
	}
	if len(owners) < 2 {
		t.Logf("all six keys on one owner: the batch did not cross nodes")
	}
}

func TestStartFailsCleanly(t *testing.T) {
	// A gossip port already taken: Start fails with the address named, and
	// leaves nothing running (goleak in TestMain checks goroutines).
	c := testcluster.Start(t, 1, testcluster.Options{})
	taken := c.Node(0).Addrs().Gossip
	_, err := cluster.Start(context.Background(), cluster.Config{GossipAddr: taken, Gossip: cluster.LocalGossip()})
	if err == nil {
		t.Fatal("Start on a taken gossip port succeeded")
	}
	if !strings.Contains(err.Error(), taken) {
		t.Fatalf("error %q does not name the address %s", err, taken)
	}
}

func TestMembersShowACrash(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{})
	dead := c.Node(2).Name()
	c.Kill(2)
	c.WaitConverged()
	for _, m := range c.Node(0).Status().Members {
		if m.Name == dead && m.State != "dead" {
			t.Fatalf("a crashed member is listed as %q", m.State)
		}
	}
	left := c.Node(1).Name()
	c.Leave(1)
	c.WaitConverged()
	for _, m := range c.Node(0).Status().Members {
		if m.Name == left && m.State != "left" {
			t.Fatalf("a member that left is listed as %q", m.State)
		}
	}
}

// TestClusterReplicasSurviveCrash: the owner of 40 keys crashes after
// their limits are used up. Once the ring drops it, the node that took
// over each key still denies it: the copies it kept became its counters.
// With copies off, the same crash resets every key (the control).
func TestClusterReplicasSurviveCrash(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{{"copies", 20 * time.Millisecond}, {"no copies", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly, Configure: func(i int, cfg *cluster.Config) {
				cfg.ReplicaInterval = tc.interval
			}})
			ctx := context.Background()
			const victim, via, keys, limit = 0, 1, 40, 50
			var mine []string
			for i := 0; len(mine) < keys; i++ {
				if k := "k" + strconv.Itoa(i); c.Owner("small", k) == victim {
					mine = append(mine, k)
				}
			}
			for _, k := range mine {
				if d, err := c.Node(via).Allow(ctx, "small", k, limit); err != nil || !d.Allowed {
					t.Fatalf("using up %s: %+v %v", k, d, err)
				}
			}
			copies := func() int {
				n := 0
				for _, i := range c.Live() {
					if i != victim {
						n += c.Node(i).Status().ReplicaCounters
					}
				}
				return n
			}
			if tc.interval > 0 {
				waitFor(t, "the copies", func() bool { return copies() >= keys })
			} else if n := copies(); n != 0 {
				t.Fatalf("%d copies with copies off", n)
			}
			c.Kill(victim)
			c.WaitConverged()
			allowed := 0
			for _, k := range mine {
				if d, _ := c.Node(via).Allow(ctx, "small", k, 1); d.Allowed {
					allowed++
				}
			}
			want := 0
			if tc.interval < 0 {
				want = keys
			}
			if allowed != want {
				t.Errorf("after the owner's crash, %d of %d used-up keys allowed a hit, want %d", allowed, keys, want)
			}
		})
	}
}
