package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/buckettest"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/leakcheck"
)

// TestMain checks that nodes leave no goroutine behind, with no
// exception: a closed node closes its incoming raft connections (whose
// handlers would otherwise wait for the peer), and lets raft answer the
// policy writes it has taken before stopping it.
func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }

func start(t *testing.T, cfg cluster.Config) *cluster.Node {
	t.Helper()
	n, err := cluster.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return n
}

func TestZeroConfigHasSeedPolicies(t *testing.T) {
	n := start(t, cluster.Config{})
	want := map[string]string{
		"default": "60/1m0s", "auth": "10/15m0s", "sensitive": "30/1h0m0s", "admin": "120/1m0s", "api_limit": "5/1s",
	}
	got := map[string]string{}
	for _, p := range n.Policies() {
		got[p.Name] = fmtPolicy(p)
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("policy %s = %q, want %q", name, got[name], w)
		}
	}
	if p, _ := n.Policy("api_limit"); p.Algorithm != bucket.GCRA || p.Burst != 0 {
		t.Errorf("api_limit = %+v, want GCRA with burst 0", p)
	}
	ctx := context.Background()
	for i := range 11 {
		d, err := n.Allow(ctx, "auth", "ip:1.2.3.4", 1)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != (i < 10) {
			t.Fatalf("auth check %d: allowed=%v", i+1, d.Allowed)
		}
	}
}

func fmtPolicy(p bucket.Policy) string {
	return fmt.Sprintf("%d/%v", p.Limit, p.Window)
}

func TestErrors(t *testing.T) {
	n := start(t, cluster.Config{MaxKeyLen: 8, MaxHits: 10})
	ctx := context.Background()
	cases := []struct {
		policy, key string
		hits        int64
		want        error
	}{
		{"nope", "k", 1, cluster.ErrUnknownPolicy},
		{"default", "", 1, cluster.ErrInvalidKey},
		{"default", "123456789", 1, cluster.ErrInvalidKey},
		{"default", "k", -1, cluster.ErrInvalidHits},
		{"default", "k", 11, cluster.ErrInvalidHits},
	}
	for _, c := range cases {
		if _, err := n.Allow(ctx, c.policy, c.key, c.hits); !errors.Is(err, c.want) {
			t.Errorf("Allow(%q, %q, %d) = %v, want %v", c.policy, c.key, c.hits, err, c.want)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := n.Allow(canceled, "default", "k", 1); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled ctx: %v", err)
	}
	n.Close(ctx)
	if _, err := n.Allow(ctx, "default", "k", 1); !errors.Is(err, cluster.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	if n.Ready() {
		t.Error("closed node reports ready")
	}
}

func TestInvalidPolicyFailsStart(t *testing.T) {
	_, err := cluster.Start(context.Background(), cluster.Config{Policies: []bucket.Policy{{Name: "x", Limit: 0, Window: time.Second}}})
	var fe *bucket.FieldError
	if !errors.Is(err, bucket.ErrInvalidPolicy) || !errors.As(err, &fe) || fe.Field != "limit" {
		t.Fatalf("got %v, want an invalid-policy error naming limit", err)
	}
	_, err = cluster.Start(context.Background(), cluster.Config{Policies: []bucket.Policy{
		{Name: "x", Limit: 1, Window: time.Second}, {Name: "x", Limit: 2, Window: time.Second}}})
	if !errors.Is(err, bucket.ErrInvalidPolicy) || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate policy: %v", err)
	}
}

func TestConcurrentChecksExact(t *testing.T) {
	n := start(t, cluster.Config{Policies: []bucket.Policy{{Name: "p", Limit: 100, Window: time.Hour}}})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 1000 {
		wg.Go(func() {
			d, err := n.Allow(context.Background(), "p", "hot", 1)
			if err == nil && d.Allowed {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 100 {
		t.Fatalf("1000 goroutines on a key of limit 100: allowed %d, want exactly 100", got)
	}
}

func TestShadowAllowsAndCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := start(t, cluster.Config{
		Shadow:   true,
		Metrics:  reg,
		Policies: []bucket.Policy{{Name: "p", Limit: 2, Window: time.Hour}},
	})
	for range 5 {
		d, err := n.Allow(context.Background(), "p", "k", 1)
		if err != nil || !d.Allowed {
			t.Fatalf("shadow mode denied: %+v %v", d, err)
		}
	}
	d, _ := n.Allow(context.Background(), "p", "k", 0)
	if !d.Shadowed || d.Remaining != 0 {
		t.Fatalf("peek over the limit in shadow mode: %+v, want shadowed with remaining 0", d)
	}
	if got := counterValue(t, reg, "p", "shadowed"); got != 4 {
		t.Fatalf("shadowed decisions = %v, want 4 (3 over-limit takes + 1 peek)", got)
	}
	if got := counterValue(t, reg, "p", "allowed"); got != 2 {
		t.Fatalf("allowed decisions = %v, want 2", got)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, policy, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ratelimit_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["policy"] == policy && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no ratelimit_decisions_total{policy=%q,result=%q}", policy, result)
	return 0
}

func TestDenialLogIsCapped(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(lockedWriter{&mu, &buf}, nil))
	clock := buckettest.NewManualClock(buckettest.Epoch)
	n := start(t, cluster.Config{
		Logger: log, LogDenials: true, DenialLogRate: 5, Clock: clock,
		Policies: []bucket.Policy{{Name: "p", Limit: 1, Window: time.Hour}},
	})
	for range 1000 {
		n.Allow(context.Background(), "p", "attacker", 1)
	}
	mu.Lock()
	lines := strings.Count(buf.String(), "rate limit exceeded")
	mu.Unlock()
	if lines != 5 {
		t.Fatalf("999 denials logged %d lines, want the cap of 5", lines)
	}
	clock.Advance(time.Second)
	n.Allow(context.Background(), "p", "attacker", 1)
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), `"suppressed":994`) {
		t.Fatalf("the next line after the cap must say how many were suppressed:\n%s", buf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestTwoNodesOneRegistryAfterClose(t *testing.T) {
	reg := prometheus.NewRegistry()
	n1, err := cluster.Start(context.Background(), cluster.Config{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Start(context.Background(), cluster.Config{Metrics: reg}); err == nil {
		t.Fatal("a second node on the same registry must fail to register")
	}
	n1.Close(context.Background())
	n2 := start(t, cluster.Config{Metrics: reg})
	_ = n2
}

// TestStatusCounts: Status carries the node's event counters, which move
// with its decisions.
func TestStatusCounts(t *testing.T) {
	n := start(t, cluster.Config{Policies: []bucket.Policy{{Name: "p", Limit: 1, Window: time.Minute}}})
	ctx := context.Background()
	for range 3 {
		if _, err := n.Allow(ctx, "p", "k", 1); err != nil {
			t.Fatal(err)
		}
	}
	if got := n.Status().Counts.Policies["p"]; got.Allowed != 1 || got.Denied != 2 {
		t.Fatalf("Status().Counts of p: %+v, want 1 allowed and 2 denied", got)
	}
}

// TestLocalConfig: two nodes of LocalConfig, the second seeded with the
// first's gossip address and key, form one cluster on loopback.
func TestLocalConfig(t *testing.T) {
	a := start(t, cluster.LocalConfig())
	key, generated := a.ClusterKey()
	if !generated || a.Addrs().Gossip == "" || a.Addrs().Peer == "" || a.Addrs().Raft == "" {
		t.Fatalf("first node: key generated %v, addresses %+v", generated, a.Addrs())
	}
	cfg := cluster.LocalConfig()
	cfg.Seeds, cfg.ClusterKey = []string{a.Addrs().Gossip}, key
	b := start(t, cfg)
	deadline := time.Now().Add(30 * time.Second)
	for a.Status().RingMembers != 2 || b.Status().RingMembers != 2 || !b.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("rings of %d and %d nodes after 30 s, want 2", a.Status().RingMembers, b.Status().RingMembers)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
