package cluster_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
)

// BenchmarkClusterHotKey is one key checked from every node of a 3-node
// cluster through the embedded API, 32×GOMAXPROCS goroutines: "denied", a
// used-up key of limit 16 per hour (the owner's denial is cached where the
// checks arrive), and "allowed", a key of limit 10^7 per minute that every
// check reaches the owner for. Each reports decisions/s, x-uniform (its
// ratio to the same goroutines making 200,000 checks of 30,000 keys in
// turn, of a policy that never denies, measured just before in the same
// sub-benchmark; about 2/3 of them are forwarded), and
// over, the checks allowed past the key's limit (0 is exact).
func BenchmarkClusterHotKey(b *testing.B) {
	c := startBenchCluster(b, false)
	nodes := []*cluster.Node{c.Node(0), c.Node(1), c.Node(2)}
	ctx := context.Background()
	hot := bucket.Policy{Name: "hot", Limit: 10_000_000, Window: time.Minute, FailureMode: bucket.FailClosed}
	if err := nodes[0].SetPolicy(ctx, hot); err != nil {
		b.Fatal(err)
	}
	for _, n := range nodes {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, ok := n.Policy("hot"); ok {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("policy hot not applied on every node")
			}
		}
	}
	all := make([]string, 30_000)
	for i := range all {
		all[i] = "user:" + strconv.Itoa(i)
	}
	uniform := [3][]string{all, all, all}
	const par = 32
	for _, tc := range []struct {
		name, policy string
		limit        int64
	}{{"denied", "sixteen", 16}, {"allowed", "hot", hot.Limit}} {
		b.Run(tc.name, func(b *testing.B) {
			key := "hot:" + tc.name + strconv.Itoa(b.N)
			base := localRate(nodes, uniform, par*runtime.GOMAXPROCS(0), 200_000)
			b.ResetTimer()
			rate, denied := parallelChecks(b, nodes, tc.policy, par, [3][]string{{key}, {key}, {key}})
			b.StopTimer()
			checkRing(b, c)
			allowed := int64(b.N) - denied
			b.ReportMetric(rate, "decisions/s")
			b.ReportMetric(base, "uniform-decisions/s")
			b.ReportMetric(rate/base, "x-uniform")
			b.ReportMetric(float64(max(0, allowed-tc.limit)), "over")
			if allowed > tc.limit {
				b.Errorf("%d checks allowed on a key of limit %d", allowed, tc.limit)
			}
		})
	}
}
