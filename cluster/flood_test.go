package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
)

// A flood of fresh keys through a 3-node cluster, twice what its
// stores hold, evicts no used-up counter: every one keeps denying, from
// every node, and the stores' metrics show the evictions.
func TestClusterFloodKeepsDenials(t *testing.T) {
	const maxKeys = 4096 // 16 a shard: 90 used-up keys never fill one
	regs := make([]*prometheus.Registry, 3)
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly, Configure: func(i int, cfg *cluster.Config) {
		cfg.MaxKeys = maxKeys
		// A busy machine must turn neither forwards into fallbacks nor
		// slow probes into ring changes: this test is about the stores.
		cfg.ForwardTimeout = 10 * time.Second
		cfg.Gossip = cluster.GossipConfig{GossipInterval: 20 * time.Millisecond}
		regs[i] = prometheus.NewRegistry()
		cfg.Metrics = regs[i]
	}})
	ctx := context.Background()
	var used []string
	for i := range 90 {
		key := fmt.Sprintf("ip:10.1.0.%d", i)
		n := c.Node(i % 3)
		if d, err := n.Allow(ctx, "small", key, 50); err != nil || !d.Allowed {
			t.Fatalf("using up %s: %+v, %v", key, d, err)
		}
		if d, err := n.Allow(ctx, "small", key, 1); err != nil || d.Allowed {
			t.Fatalf("%s allowed past its limit: %+v, %v", key, d, err)
		}
		used = append(used, key)
	}

	const flood, batch = 2 * 3 * maxKeys, 256
	checks := make([]cluster.Request, batch)
	out := make([]cluster.Result, batch)
	for b := range flood / batch {
		for j := range checks {
			checks[j] = cluster.Request{Policy: "default", Key: fmt.Sprintf("flood:%d", b*batch+j), Hits: 1}
		}
		if err := c.Node(b%3).AllowBatch(ctx, checks, out); err != nil {
			t.Fatal(err)
		}
		for j, r := range out {
			if r.Err != nil || !r.Allowed {
				t.Fatalf("fresh key %s: %+v", checks[j].Key, r)
			}
		}
	}

	for i := range 3 {
		for _, key := range used {
			if d, err := c.Node(i).Allow(ctx, "small", key, 1); err != nil || d.Allowed {
				var denying, refused float64
				for _, reg := range regs {
					denying += gaugeOrCounter(t, reg, "ratelimit_store_evictions_total", "counters", "denying")
					refused += gaugeOrCounter(t, reg, "ratelimit_store_evictions_total", "counters", "refused")
				}
				t.Fatalf("used-up key %s allowed from node %d after the flood (remaining %d, err %v; %v denying evicted, %v refused, ring of %d)",
					key, i, d.Remaining, err, denying, refused, c.Node(i).Status().RingMembers)
			}
		}
	}
	var counting, denying, held float64
	for _, reg := range regs {
		counting += gaugeOrCounter(t, reg, "ratelimit_store_evictions_total", "counters", "counting")
		denying += gaugeOrCounter(t, reg, "ratelimit_store_evictions_total", "counters", "denying")
		held += gaugeOrCounter(t, reg, "ratelimit_store_counters", "counters", "")
	}
	if counting == 0 || denying != 0 || held > 3*maxKeys {
		t.Fatalf("metrics: %v counting and %v denying counters evicted, %v held; want some, none, at most %d", counting, denying, held, 3*maxKeys)
	}
}

// gaugeOrCounter returns the value of the series name{store, reason} in reg
// (reason "" for a series without it).
func gaugeOrCounter(t *testing.T, reg *prometheus.Registry, name, store, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["store"] != store || labels["reason"] != reason {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s{store=%q,reason=%q}", name, store, reason)
	return 0
}

// A node logs, once, when its store starts evicting, with the bound, and
// again when it stops.
func TestStoreEvictionLogged(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	n := start(t, cluster.Config{
		Logger:   slog.New(slog.NewJSONHandler(lockedWriter{&mu, &buf}, nil)),
		MaxKeys:  256,
		Policies: hourly,
	})
	logged := func(msg string) bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Count(buf.String(), msg) == 1
	}
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; !logged("counter store full"); i++ {
		if time.Now().After(deadline) {
			t.Fatal("no log line within 20 s of a flood past MaxKeys")
		}
		n.Allow(context.Background(), "default", fmt.Sprint("flood:", i), 1)
		if i%1000 == 999 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	mu.Lock()
	line := buf.String()
	mu.Unlock()
	if !strings.Contains(line, `"max_keys":256`) {
		t.Fatalf("the line does not give the bound:\n%s", line)
	}
	for !logged("counter store no longer evicting") {
		if time.Now().After(deadline) {
			t.Fatal("no log line when the flood stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
