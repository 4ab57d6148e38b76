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

	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
)

// BenchmarkClusterSecurityCost is what authentication and encryption cost:
// two 3-node clusters in one run, one with a cluster key (the default:
// mutual TLS on the peer transport and raft, encrypted gossip) and one
// Insecure, each deciding checks of keys drawn from 30,000 (about 2/3 go
// to another node) from 32×GOMAXPROCS goroutines. Rounds of 25,000
// checks alternate between the two, 16 each, so that the load of a shared
// machine falls on both alike; reported: decisions/s of each over all
// rounds, secure/insecure, and the median of the rounds' ratios. Run with
// -benchtime 1x; docs/benchmarks.md.
func BenchmarkClusterSecurityCost(b *testing.B) {
	start := func(insecure bool) []*cluster.Node {
		c := testcluster.Start(b, 3, testcluster.Options{
			Policies: clusterBenchPolicies,
			Insecure: insecure,
			Configure: func(_ int, cfg *cluster.Config) {
				cfg.Gossip = cluster.GossipConfig{} // production timings
				cfg.RaftTimeout = 0
			},
		})
		deadline := time.Now().Add(20 * time.Second)
		for !benchSeeded(c) {
			if time.Now().After(deadline) {
				b.Fatal("policy table not seeded after 20 s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		return []*cluster.Node{c.Node(0), c.Node(1), c.Node(2)}
	}
	secure, insecure := start(false), start(true)
	keys := make([]string, 30_000)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
	}
	goroutines := 32 * runtime.GOMAXPROCS(0)
	const rounds, perRound = 16, 25_000
	for range b.N {
		var tSec, tIns time.Duration
		var fallbacks int64
		var ratios []float64
		for range rounds {
			ds, f := timedChecks(secure, keys, goroutines, perRound)
			tSec += ds
			fallbacks += f
			di, f := timedChecks(insecure, keys, goroutines, perRound)
			tIns += di
			fallbacks += f
			ratios = append(ratios, di.Seconds()/ds.Seconds())
		}
		slices.Sort(ratios)
		b.ReportMetric(ratios[len(ratios)/2], "x-insecure-median")
		sec := float64(rounds*perRound) / tSec.Seconds()
		ins := float64(rounds*perRound) / tIns.Seconds()
		b.ReportMetric(sec, "secure-decisions/s")
		b.ReportMetric(ins, "insecure-decisions/s")
		b.ReportMetric(sec/ins, "x-insecure")
		b.ReportMetric(float64(fallbacks), "fallbacks")
	}
}

// timedChecks decides count checks of policy "p" over nodes from
// goroutines goroutines and returns the time taken and the denials (each a
// failure-mode decision: "p" never denies).
func timedChecks(nodes []*cluster.Node, keys []string, goroutines, count int) (time.Duration, int64) {
	var next, denied atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for g := range goroutines {
		wg.Go(func() {
			ctx := context.Background()
			n := nodes[g%3]
			for {
				i := next.Add(1)
				if i > int64(count) {
					return
				}
				d, err := n.Allow(ctx, "p", keys[(int(i)*7919)%len(keys)], 1)
				if err != nil || !d.Allowed {
					denied.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), denied.Load()
}
