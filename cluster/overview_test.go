package cluster_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
)

// gathered returns the value of the series of name whose labels include
// want, summed, from reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) (float64, bool) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	found := false
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metrics
				}
			}
			found = true
			sum += value(m)
		}
	}
	return sum, found
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestOverviewCountsEvictionsAndPeerErrors: a flood of keys over stores
// of 64 counters makes them evict, and the overview of any node sums the
// evictions; checks whose owner is cut off count peer errors on the node
// that forwarded them, by op and kind, in the overview and in
// ratelimit_peer_errors_total.
func TestOverviewCountsEvictionsAndPeerErrors(t *testing.T) {
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	c := testcluster.Start(t, 2, testcluster.Options{
		Policies: []bucket.Policy{{Name: "p", Limit: 1 << 30, Window: time.Hour, FailureMode: bucket.FailOpen}},
		InMemory: true,
		Configure: func(i int, cfg *cluster.Config) {
			cfg.MaxKeys = 64
			cfg.Metrics = regs[i]
		},
	})
	ctx := context.Background()
	ov := c.Node(0).Overview(ctx)
	if ov.Counts.Evictions != 0 {
		t.Fatalf("a new cluster: %d evictions", ov.Counts.Evictions)
	}
	// A loaded machine can fail a call while the two nodes start (a
	// hand-over to a member still starting): the cut-off below is counted
	// on top of node 0's, the only node the overview reaches then.
	start0, _ := gathered(t, regs[0], "ratelimit_peer_errors_total", nil)
	startErrors := uint64(start0)
	startCountsErrors, _ := gathered(t, regs[0], "ratelimit_peer_errors_total", map[string]string{"op": "counts", "kind": "unreachable"})
	startCheckErrors, _ := gathered(t, regs[0], "ratelimit_peer_errors_total", map[string]string{"op": "check", "kind": "unreachable"})
	// 1000 new keys, about 500 a node, through node 0.
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "flood:" + strconv.Itoa(i)
		if _, err := c.Node(0).Allow(ctx, "p", keys[i], 1); err != nil {
			t.Fatal(err)
		}
	}
	ov = c.Node(1).Overview(ctx)
	if len(ov.Nodes) != 2 {
		t.Fatalf("overview from %v, missing %v", ov.Nodes, ov.Missing)
	}
	// A store keeps at most MaxKeys (64, rounded up to one a shard) of
	// the keys its node owns.
	owned := [2]uint64{}
	for _, k := range keys {
		owned[c.Owner("p", k)]++
	}
	held := uint64(max(64, bucket.NewMemoryStore(bucket.MemoryConfig{MaxKeys: 64}).MaxKeys()))
	if want := owned[0] - min(owned[0], held) + owned[1] - min(owned[1], held); ov.Counts.Evictions < want || want == 0 {
		t.Errorf("%d evictions counted over the two nodes, want at least %d (keys owned %v, a store holds %d)", ov.Counts.Evictions, want, owned, held)
	}

	// Node 1 cut off: node 0's forwards to it fail as unreachable.
	c.Partition([]int{0}, []int{1})
	t.Cleanup(c.Heal)
	forwards := 0
	for _, k := range keys {
		if c.Owner("p", k) != 1 {
			continue
		}
		if _, err := c.Node(0).Allow(ctx, "p", k, 1); err != nil {
			t.Fatal(err)
		}
		if forwards++; forwards == 20 {
			break
		}
	}
	got, ok := gathered(t, regs[0], "ratelimit_peer_errors_total", map[string]string{"op": "check", "kind": "unreachable"})
	if !ok || got < startCheckErrors+float64(forwards) {
		t.Errorf("ratelimit_peer_errors_total{op=check,kind=unreachable} = %v (served: %v) after %d failed forwards", got, ok, forwards)
	}
	if _, ok := gathered(t, regs[1], "ratelimit_peer_errors_total", map[string]string{"op": "check"}); ok {
		t.Error("node 1 counts failed checks it never sent")
	}
	ov = c.Node(0).Overview(ctx)
	if ov.Missing[c.Node(1).Name()] == "" {
		t.Fatalf("overview while cut off: missing %v, want node 1", ov.Missing)
	}
	if ov.Counts.PeerErrors < startErrors+uint64(forwards) {
		t.Errorf("overview counts %d peer errors, want at least %d", ov.Counts.PeerErrors, forwards)
	}
	// The overview's own call to node 1 failed too: the next one counts it.
	if got, _ := gathered(t, regs[0], "ratelimit_peer_errors_total", map[string]string{"op": "counts", "kind": "unreachable"}); got != startCountsErrors+1 {
		t.Errorf("failed counts calls: %v, want %v", got, startCountsErrors+1)
	}
	if next := c.Node(0).Overview(ctx); next.Counts.PeerErrors < ov.Counts.PeerErrors+1 {
		t.Errorf("the next overview counts %d peer errors, want at least %d", next.Counts.PeerErrors, ov.Counts.PeerErrors+1)
	}
}
