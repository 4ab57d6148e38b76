package cluster_test

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
	"github.com/vibewell/ratelimit/transport"
)

// Benchmarks of a 3-node cluster on loopback (real TCP between nodes):
// remote checks against local ones, throughput under concurrency, and the
// raft-replicated policy table. Every figure is reported with a baseline
// measured in the same run, since the machine's load moves absolute
// figures. Results and commands: docs/benchmarks.md.

// clusterBenchPolicies: "p" never denies during a benchmark, and fails
// closed, so a check its owner could not answer shows as a denial, which
// the benchmarks count ("fallbacks") instead of passing it off as a
// decision of the owner. "churn" is the policy the write benchmarks change.
// "thousand" (below 2048) has every admitted hit copied to the successor.
var clusterBenchPolicies = []bucket.Policy{
	{Name: "p", Limit: 1 << 31, Window: time.Hour, FailureMode: bucket.FailClosed},
	{Name: "churn", Limit: 100, Window: time.Minute},
	{Name: "sixteen", Limit: 16, Window: time.Hour, FailureMode: bucket.FailClosed},
	{Name: "psync", Limit: 1 << 31, Window: time.Hour, FailureMode: bucket.FailClosed, Replication: bucket.ReplicateSync},
	{Name: "thousand", Limit: 1000, Window: time.Minute, FailureMode: bucket.FailClosed},
}

// benchCluster is a test cluster with the peer transports of its nodes,
// whose counters tell the batch sizes.
type benchCluster struct {
	*testcluster.Cluster
	tr []*transport.TCP
}

// sent returns the checks and frames sent by all nodes so far.
func (c *benchCluster) sent() (checks, frames uint64) {
	for _, t := range c.tr {
		st := t.Stats()
		checks += st.ChecksSent
		frames += st.CheckFrames
	}
	return checks, frames
}

// startBenchCluster starts a 3-node cluster with the production defaults
// for gossip and raft timings (the test defaults are tight enough that a
// loaded machine would see false failures) and the default peer
// transport, made here to read its counters, and waits until raft has
// seeded the policy table on every node and the leader has its 3 voters.
func startBenchCluster(b *testing.B, persist bool, mod ...func(*cluster.Config)) *benchCluster {
	b.Helper()
	bc := &benchCluster{}
	bc.Cluster = testcluster.Start(b, 3, testcluster.Options{
		Policies: clusterBenchPolicies,
		Persist:  persist,
		Configure: func(_ int, cfg *cluster.Config) {
			cfg.Gossip = cluster.GossipConfig{}
			cfg.RaftTimeout = 0
			tr, err := transport.NewTCP(transport.TCPConfig{Addr: "127.0.0.1:0", CallTimeout: cluster.DefaultForwardTimeout})
			if err != nil {
				b.Fatal(err)
			}
			cfg.Transport = tr // the node closes it
			bc.tr = append(bc.tr, tr)
			for _, f := range mod {
				f(cfg)
			}
		},
	})
	c := bc.Cluster
	deadline := time.Now().Add(20 * time.Second)
	for !benchSeeded(c) {
		if time.Now().After(deadline) {
			b.Fatal("policy table not seeded, or leader without 3 voters, after 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return bc
}

func benchSeeded(c *testcluster.Cluster) bool {
	for _, i := range c.Live() {
		st := c.Node(i).Status()
		if st.PolicyVersion == 0 || st.Raft == nil {
			return false
		}
		if st.Raft.State == "leader" && len(st.Raft.Voters) != 3 {
			return false
		}
	}
	return true
}

// keysOwned returns count keys of policy "p" that node i owns (local
// true) or does not own (local false).
func keysOwned(c *benchCluster, i int, local bool, count int) []string {
	n := c.Node(i)
	keys := make([]string, 0, count)
	for k := 0; len(keys) < count; k++ {
		key := "user:" + strconv.Itoa(k)
		if (n.Owner("p", key) == n.Name()) == local {
			keys = append(keys, key)
		}
	}
	return keys
}

// checkRing fails the benchmark if a node lost a member during the run,
// which would have turned remote checks into failure-mode decisions.
func checkRing(b *testing.B, c *benchCluster) {
	b.Helper()
	for _, i := range c.Live() {
		if st := c.Node(i).Status(); st.RingMembers != 3 {
			b.Fatalf("node %d sees a ring of %d during the run", i, st.RingMembers)
		}
	}
}

// percentile returns the q-quantile (0..1) of sorted durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// BenchmarkClusterRemoteVsLocal is one caller on node 0 of a 3-node
// cluster checking, in alternating runs of 100, a key node 0 owns and a
// key another node owns. Each op is one local and one remote check.
// Reported: local-ns and remote-ns per check, remote/local, and the p50
// and p99 of the remote checks, each timed alone (one caller: low load).
func BenchmarkClusterRemoteVsLocal(b *testing.B) {
	c := startBenchCluster(b, false)
	n := c.Node(0)
	ctx := context.Background()
	local := keysOwned(c, 0, true, 1)[0]
	remote := keysOwned(c, 0, false, 1)[0]
	for _, key := range []string{local, remote} { // connections up, counters made
		if _, err := n.Allow(ctx, "p", key, 1); err != nil {
			b.Fatal(err)
		}
	}
	const run = 100
	lat := make([]time.Duration, 0, b.N)
	var localTime, remoteTime time.Duration
	denied := 0
	b.ResetTimer()
	for done := 0; done < b.N; {
		m := min(run, b.N-done)
		start := time.Now()
		for range m {
			d, err := n.Allow(ctx, "p", local, 1)
			if err != nil {
				b.Fatal(err)
			}
			if !d.Allowed {
				denied++
			}
		}
		localTime += time.Since(start)
		for range m {
			t0 := time.Now()
			d, err := n.Allow(ctx, "p", remote, 1)
			el := time.Since(t0)
			if err != nil {
				b.Fatal(err)
			}
			if !d.Allowed {
				denied++
			}
			lat = append(lat, el)
			remoteTime += el
		}
		done += m
	}
	b.StopTimer()
	checkRing(b, c)
	slices.Sort(lat)
	ln := float64(localTime.Nanoseconds()) / float64(b.N)
	rn := float64(remoteTime.Nanoseconds()) / float64(b.N)
	b.ReportMetric(ln, "local-ns")
	b.ReportMetric(rn, "remote-ns")
	b.ReportMetric(rn/ln, "remote/local")
	b.ReportMetric(float64(percentile(lat, 0.50).Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(percentile(lat, 0.99).Nanoseconds())/1e3, "p99-µs")
	b.ReportMetric(float64(denied), "fallbacks")
}

// BenchmarkClusterSyncReplication is the cost of "replication": "sync":
// one caller on node 0 of a 3-node cluster checks keys other nodes own,
// in alternating runs of 100 under policy "p" (copies sent after the
// answer) and "psync" (the owner answers once the successor has the
// change). The keys are taken in turn from 2,048, so that none is checked
// often enough to be leased (a leased key is decided without a hop).
// Reported: the p50 and p99 of each, timed alone, and sync/async of the
// p50s.
func BenchmarkClusterSyncReplication(b *testing.B) {
	c := startBenchCluster(b, false)
	n := c.Node(0)
	ctx := context.Background()
	keys := keysOwned(c, 0, false, 2048)
	for _, policy := range []string{"p", "psync"} {
		for _, k := range keys {
			if _, err := n.Allow(ctx, policy, k, 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	next := 0
	const run = 100
	lat := map[string][]time.Duration{}
	b.ResetTimer()
	for done := 0; done < b.N; {
		m := min(run, b.N-done)
		for _, policy := range []string{"p", "psync"} {
			for range m {
				remote := keys[next%len(keys)]
				next++
				t0 := time.Now()
				d, err := n.Allow(ctx, policy, remote, 1)
				el := time.Since(t0)
				if err != nil || !d.Allowed {
					b.Fatalf("%s: %+v %v", policy, d, err)
				}
				lat[policy] = append(lat[policy], el)
			}
		}
		done += m
	}
	b.StopTimer()
	checkRing(b, c)
	for _, l := range lat {
		slices.Sort(l)
	}
	async, sync := percentile(lat["p"], 0.50), percentile(lat["psync"], 0.50)
	b.ReportMetric(float64(async.Nanoseconds())/1e3, "async-p50-µs")
	b.ReportMetric(float64(percentile(lat["p"], 0.99).Nanoseconds())/1e3, "async-p99-µs")
	b.ReportMetric(float64(sync.Nanoseconds())/1e3, "sync-p50-µs")
	b.ReportMetric(float64(percentile(lat["psync"], 0.99).Nanoseconds())/1e3, "sync-p99-µs")
	b.ReportMetric(float64(sync)/float64(async), "sync/async-p50")
}

// sequentialRate is the decisions/s of one caller on node checking keys
// in turn, over count checks: the baseline of the concurrent benchmarks.
func sequentialRate(b *testing.B, n *cluster.Node, keys []string, count int) float64 {
	ctx := context.Background()
	start := time.Now()
	for i := range count {
		if _, err := n.Allow(ctx, "p", keys[i%len(keys)], 1); err != nil {
			b.Fatal(err)
		}
	}
	return float64(count) / time.Since(start).Seconds()
}

// BenchmarkClusterRemoteParallel is node 0 of a 3-node cluster checking
// keys all owned by the two other nodes, from par×GOMAXPROCS goroutines.
// Reported: decisions/s, and x-seq, its ratio to one caller's decisions/s
// measured just before (2,000 checks), and the mean checks per frame.
// "ctx-deadline" gives each caller a ctx with a deadline (an hour), as a
// server's request context has one: Allow then derives a context bounded
// by ForwardTimeout for each forwarded check; -benchmem shows its cost.
func BenchmarkClusterRemoteParallel(b *testing.B) {
	c := startBenchCluster(b, false)
	n := c.Node(0)
	keys := keysOwned(c, 0, false, 4096)
	for _, v := range []struct {
		par      int
		deadline bool
	}{{8, false}, {32, false}, {128, false}, {128, true}} {
		name := "par=" + strconv.Itoa(v.par)
		if v.deadline {
			name += "/ctx-deadline"
		}
		par := v.par
		b.Run(name, func(b *testing.B) {
			seq := sequentialRate(b, n, keys, 2000)
			var denied atomic.Int64
			var next atomic.Uint64
			b.SetParallelism(par)
			checks0, frames0 := c.sent()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				if v.deadline {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, time.Hour)
					defer cancel()
				}
				i := next.Add(7919)
				for pb.Next() {
					i++
					d, err := n.Allow(ctx, "p", keys[i%uint64(len(keys))], 1)
					if err != nil {
						b.Error(err)
						return
					}
					if !d.Allowed {
						denied.Add(1)
					}
				}
			})
			b.StopTimer()
			checks1, frames1 := c.sent()
			checkRing(b, c)
			b.ReportMetric(float64(checks1-checks0)/float64(max(1, frames1-frames0)), "checks/frame")
			rate := float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(rate, "decisions/s")
			b.ReportMetric(seq, "seq-decisions/s")
			b.ReportMetric(rate/seq, "x-seq")
			b.ReportMetric(float64(denied.Load()), "fallbacks")
		})
	}
}

// BenchmarkClusterThroughput is the whole 3-node cluster deciding through
// the embedded API, from par×GOMAXPROCS goroutines spread evenly over the
// three nodes. "uniform": keys drawn uniformly from 30,000 (about 2/3
// remote); "remote": each goroutine draws only keys its node does not
// own. Each reports decisions/s and x-local, its ratio to the baseline
// measured just before in the same sub-benchmark: the same goroutines
// checking only keys their node owns (no network), 200,000 checks.
func BenchmarkClusterThroughput(b *testing.B) {
	c := startBenchCluster(b, false)
	nodes := []*cluster.Node{c.Node(0), c.Node(1), c.Node(2)}
	const perNode = 10_000
	all := make([]string, 3*perNode)
	for i := range all {
		all[i] = "user:" + strconv.Itoa(i)
	}
	var localKeys, remoteKeys [3][]string
	for i := range nodes {
		localKeys[i] = keysOwned(c, i, true, perNode)
		remoteKeys[i] = keysOwned(c, i, false, perNode)
	}
	uniform := [3][]string{all, all, all}
	for _, par := range []int{8, 32, 128, 256} {
		for _, mix := range []struct {
			name string
			keys [3][]string
		}{{"remote", remoteKeys}, {"uniform", uniform}} {
			b.Run(mix.name+"/par="+strconv.Itoa(par), func(b *testing.B) {
				// The local baseline, 200,000 checks, in the same
				// sub-benchmark run.
				base := localRate(nodes, localKeys, par*runtime.GOMAXPROCS(0), 200_000)
				checks0, frames0 := c.sent()
				b.ResetTimer()
				rate, denied := parallelChecks(b, nodes, "p", par, mix.keys)
				b.StopTimer()
				checks1, frames1 := c.sent()
				checkRing(b, c)
				b.ReportMetric(float64(checks1-checks0)/float64(max(1, frames1-frames0)), "checks/frame")
				b.ReportMetric(rate, "decisions/s")
				b.ReportMetric(base, "local-decisions/s")
				b.ReportMetric(rate/base, "x-local")
				b.ReportMetric(float64(denied), "fallbacks")
			})
		}
	}
}

// parallelChecks runs checks from par×GOMAXPROCS goroutines, goroutine g
// on node g%3 with keys[g%3], b.N checks in all, and returns decisions/s
// and the denials.
func parallelChecks(b *testing.B, nodes []*cluster.Node, policy string, par int, keys [3][]string) (float64, int64) {
	var denied atomic.Int64
	var gid, next atomic.Uint64
	b.SetParallelism(par)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		g := gid.Add(1)
		n, ks := nodes[g%3], keys[g%3]
		i := next.Add(104729)
		for pb.Next() {
			i = i*6364136223846793005 + 1442695040888963407
			d, err := n.Allow(ctx, policy, ks[(i>>33)%uint64(len(ks))], 1)
			if err != nil {
				b.Error(err)
				return
			}
			if !d.Allowed {
				denied.Add(1)
			}
		}
	})
	return float64(b.N) / b.Elapsed().Seconds(), denied.Load()
}

// BenchmarkClusterReplicaCost is what the counter copies cost: two 3-node
// clusters in one process, one copying changed counters continuously (the
// default) and one without copies (ReplicaInterval -1), each deciding
// checks of keys drawn uniformly from 30,000 keys (about 2/3 remote) from
// 128×GOMAXPROCS goroutines. Policy "p" (limit 2^31, never denies) copies
// a counter once per 2^21 hits (capacity/1024), so rarely; "thousand"
// (1000 a minute, below 2048) copies every admitted hit. After a warm-up
// of each cluster, each op is one round of replicaRoundChecks checks on
// each cluster, the order alternating from op to op; run with
// -benchtime 10x for 10 rounds. Reported per policy: on/off (checks/s with
// copies over checks/s without, the median of the rounds' ratios),
// cpu-on/off (the process's CPU time per decision, user and system, with
// copies over without: the machine's other load moves it far less than
// the wall clock), the checks/s and CPU µs per decision of each side
// (medians), and rounds/check and copies/check with copies on (replica
// calls and counters sent per check).
func BenchmarkClusterReplicaCost(b *testing.B) {
	on := startBenchCluster(b, false)
	off := startBenchCluster(b, false, func(cfg *cluster.Config) { cfg.ReplicaInterval = -1 })
	goroutines := 128 * runtime.GOMAXPROCS(0)
	for _, policy := range []string{"p", "thousand"} {
		b.Run(policy, func(b *testing.B) {
			keys := make([]string, 30_000)
			for i := range keys {
				keys[i] = policy + ":" + strconv.Itoa(i)
			}
			run := func(c *benchCluster) (rate float64, cpu time.Duration) {
				nodes := []*cluster.Node{c.Node(0), c.Node(1), c.Node(2)}
				cpu0 := processCPU()
				start := time.Now()
				if err := fixedChecks(nodes, policy, goroutines, replicaRoundChecks, keys); err != nil {
					b.Fatal(err)
				}
				elapsed := time.Since(start)
				cpu = (processCPU() - cpu0) / replicaRoundChecks
				checkRing(b, c)
				return replicaRoundChecks / elapsed.Seconds(), cpu
			}
			run(on) // warm-up: connections, keys, slots
			run(off)
			var ratios, cpuRatios, onRates, offRates []float64
			var onCPU, offCPU []time.Duration
			var rounds, copies uint64
			b.ResetTimer()
			for i := range b.N {
				var onRate, offRate float64
				var onC, offC time.Duration
				rounds0, copies0 := replicaRounds(on), replicaSent(on)
				if i%2 == 0 {
					onRate, onC = run(on)
					offRate, offC = run(off)
				} else {
					offRate, offC = run(off)
					onRate, onC = run(on)
				}
				rounds += replicaRounds(on) - rounds0
				copies += replicaSent(on) - copies0
				ratios = append(ratios, onRate/offRate)
				cpuRatios = append(cpuRatios, float64(onC)/float64(max(offC, 1)))
				onRates, offRates = append(onRates, onRate), append(offRates, offRate)
				onCPU, offCPU = append(onCPU, onC), append(offCPU, offC)
			}
			b.StopTimer()
			median := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
			slices.Sort(onCPU)
			slices.Sort(offCPU)
			b.ReportMetric(median(ratios), "on/off")
			b.ReportMetric(median(cpuRatios), "cpu-on/off")
			b.ReportMetric(median(onRates), "on-checks/s")
			b.ReportMetric(median(offRates), "off-checks/s")
			b.ReportMetric(float64(percentile(onCPU, 0.5).Nanoseconds())/1e3, "on-cpu-µs/check")
			b.ReportMetric(float64(percentile(offCPU, 0.5).Nanoseconds())/1e3, "off-cpu-µs/check")
			b.ReportMetric(float64(rounds)/float64(b.N*replicaRoundChecks), "rounds/check")
			b.ReportMetric(float64(copies)/float64(b.N*replicaRoundChecks), "copies/check")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// replicaRoundChecks is the checks of one round of BenchmarkClusterReplicaCost
// on one cluster.
const replicaRoundChecks = 40_000

// fixedChecks decides count checks of policy from goroutines spread over
// the nodes, keys drawn uniformly from keys; a check that fails is an
// error.
func fixedChecks(nodes []*cluster.Node, policy string, goroutines, count int, keys []string) error {
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			ctx := context.Background()
			n := nodes[g%len(nodes)]
			x := uint64(g)*104729 + 1
			for next.Add(1) <= int64(count) {
				x = x*6364136223846793005 + 1442695040888963407
				if _, err := n.Allow(ctx, policy, keys[(x>>33)%uint64(len(keys))], 1); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return *err
	}
	return nil
}

// replicaSent sums the counter copies the nodes sent.
func replicaSent(c *benchCluster) uint64 {
	var n uint64
	for _, i := range c.Live() {
		n += c.Node(i).ReplicasSent()
	}
	return n
}

// replicaRounds sums the replica calls the nodes made.
func replicaRounds(c *benchCluster) uint64 {
	var n uint64
	for _, i := range c.Live() {
		n += c.Node(i).ReplicaCalls()
	}
	return n
}

// localRate is the decisions/s of goroutines spread over the nodes, each
// checking keys its node owns, count checks in all.
func localRate(nodes []*cluster.Node, keys [3][]string, goroutines, count int) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for g := range goroutines {
		wg.Go(func() {
			ctx := context.Background()
			n, ks := nodes[g%3], keys[g%3]
			for {
				i := next.Add(1)
				if i > int64(count) {
					return
				}
				n.Allow(ctx, "p", ks[int(i)%len(ks)], 1)
			}
		})
	}
	wg.Wait()
	return float64(count) / time.Since(start).Seconds()
}

// BenchmarkClusterPolicyPropagation is the time from a SetPolicy call to
// the new policy's visibility on every node of a 3-node cluster (each
// node's Policy polled in a tight loop), with raft in memory and on bbolt
// (DataDir: log and stable store fsynced on every commit). Each op is two
// writes: one through a follower (forwarded to the leader over the peer
// transport), and one through the leader, the baseline. Reported: p50 and
// p99 in µs of each, the follower/leader ratio of the p50s, and the p50
// of the follower's acknowledgement (SetPolicy returning). Run with
// -benchtime 100x for 100 writes of each. The "-before" clusters run
// raft's former timing (CommitTimeout 2 ms, which kept an idle leader at a
// fifth of a core, RaftTimeout 1 s, no barrier after a change): the
// baseline of the idle-cost work, in the same run.
func BenchmarkClusterPolicyPropagation(b *testing.B) {
	before := func(cfg *cluster.Config) {
		cluster.SetLegacyRaftCommit(cfg, 2*time.Millisecond)
		cfg.RaftTimeout = time.Second
	}
	clusters := map[string]*benchCluster{
		"memory":        startBenchCluster(b, false),
		"bbolt":         startBenchCluster(b, true),
		"memory-before": startBenchCluster(b, false, before),
		"bbolt-before":  startBenchCluster(b, true, before),
	}
	for _, name := range []string{"memory-before", "memory", "bbolt-before", "bbolt"} {
		c := clusters[name]
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			var viaFollower, viaLeader, acks []time.Duration
			limit := int64(1000)
			// write sets policy "prop" through node i and returns the
			// times to acknowledgement and to visibility everywhere.
			write := func(i int) (ack, visible time.Duration) {
				limit++
				want := limit
				p := bucket.Policy{Name: "prop", Limit: want, Window: time.Minute}
				start := time.Now()
				if err := c.Node(i).SetPolicy(ctx, p); err != nil {
					b.Fatalf("SetPolicy through node %d: %v", i, err)
				}
				ack = time.Since(start)
				for seen := 0; seen < 3; {
					seen = 0
					for j := range 3 {
						if got, ok := c.Node(j).Policy("prop"); ok && got.Limit == want {
							seen++
						}
					}
					if time.Since(start) > 10*time.Second {
						b.Fatalf("limit %d not visible on every node after 10 s", want)
					}
					runtime.Gosched()
				}
				return ack, time.Since(start)
			}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				leader := c.Leader()
				b.StartTimer()
				ack, vis := write((leader + 1 + len(acks)%2) % 3)
				acks = append(acks, ack)
				viaFollower = append(viaFollower, vis)
				_, vis = write(leader)
				viaLeader = append(viaLeader, vis)
			}
			b.StopTimer()
			for _, s := range [][]time.Duration{viaFollower, viaLeader, acks} {
				slices.Sort(s)
			}
			us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
			b.ReportMetric(us(percentile(viaFollower, 0.5)), "follower-p50-µs")
			b.ReportMetric(us(percentile(viaFollower, 0.99)), "follower-p99-µs")
			b.ReportMetric(us(percentile(acks, 0.5)), "follower-ack-p50-µs")
			b.ReportMetric(us(percentile(viaLeader, 0.5)), "leader-p50-µs")
			b.ReportMetric(us(percentile(viaLeader, 0.99)), "leader-p99-µs")
			b.ReportMetric(float64(percentile(viaFollower, 0.5))/float64(percentile(viaLeader, 0.5)), "follower/leader")
		})
	}
}

// BenchmarkClusterChecksDuringWrites is checks/s on a 3-node cluster with
// and without a concurrent stream of policy changes: each op is two
// phases of 24,000 checks (48 goroutines, 16 per node, keys uniform over
// 30,000, so about 2/3 remote), one quiet and one while a writer changes
// policy "churn" every 10 ms through a node it rotates over; the order
// of the phases alternates. Reported: decisions/s of each, their ratio
// (writes/quiet), and the policy changes committed per second of the
// write phases. Run with -benchtime 30x.
func BenchmarkClusterChecksDuringWrites(b *testing.B) {
	c := startBenchCluster(b, false)
	nodes := []*cluster.Node{c.Node(0), c.Node(1), c.Node(2)}
	keys := make([]string, 30_000)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
	}
	const goroutines, perGoroutine = 48, 500
	var denied atomic.Int64
	checks := func() time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for g := range goroutines {
			wg.Go(func() {
				ctx := context.Background()
				n := nodes[g%3]
				x := uint64(g)*7919 + uint64(start.UnixNano())
				for range perGoroutine {
					x = x*6364136223846793005 + 1442695040888963407
					d, err := n.Allow(ctx, "p", keys[(x>>33)%uint64(len(keys))], 1)
					if err != nil {
						b.Error(err)
						return
					}
					if !d.Allowed {
						denied.Add(1)
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	limit := int64(100)
	var writes int64
	// withWrites runs checks while a goroutine writes every 10 ms.
	withWrites := func() time.Duration {
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			ctx := context.Background()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for k := 0; ; k++ {
				limit++
				p := bucket.Policy{Name: "churn", Limit: limit, Window: time.Minute}
				if err := nodes[k%3].SetPolicy(ctx, p); err != nil {
					b.Errorf("SetPolicy: %v", err)
					return
				}
				writes++
				select {
				case <-done:
					return
				case <-tick.C:
				}
			}
		})
		el := checks()
		close(done)
		wg.Wait()
		return el
	}
	var quiet, busy time.Duration
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			quiet += checks()
			busy += withWrites()
		} else {
			busy += withWrites()
			quiet += checks()
		}
	}
	b.StopTimer()
	checkRing(b, c)
	if got, _ := nodes[0].Policy("churn"); got.Limit != limit {
		b.Fatalf("last change (limit %d) not applied on node 0: limit %d", limit, got.Limit)
	}
	total := float64(b.N * goroutines * perGoroutine)
	qr, br := total/quiet.Seconds(), total/busy.Seconds()
	b.ReportMetric(qr, "quiet-decisions/s")
	b.ReportMetric(br, "writes-decisions/s")
	b.ReportMetric(br/qr, "writes/quiet")
	b.ReportMetric(float64(writes)/busy.Seconds(), "changes/s")
	b.ReportMetric(float64(denied.Load()), "fallbacks")
}
