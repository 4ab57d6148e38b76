package bench

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vibewell/ratelimit/httpapi"
)

// The CPU report: per node, its CPU in the run less its idle share, per
// decision; the projection is bounded by the node that saturates first.
func TestNodesCPU(t *testing.T) {
	before := []CPUSample{{Name: "a", PID: 1, CPU: time.Second}, {Name: "b", PID: 2, CPU: 0}, {Name: "gone", PID: 3}}
	after := []CPUSample{{Name: "a", PID: 1, CPU: 3 * time.Second}, {Name: "b", PID: 2, CPU: time.Second}, {Name: "late", PID: 4, CPU: time.Hour}}
	idle := &IdleCPU{Window: 10 * time.Second, Share: map[int]float64{1: 0.01, 2: 0}}
	// 10 s run, 100,000 decisions: a used 2 s (0.1 s of it idle), b 1 s.
	c := nodesCPU(before, after, 10*time.Second, 100_000, idle)
	if len(c.Nodes) != 2 {
		t.Fatalf("nodes %+v: want a and b only", c.Nodes)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-6*math.Max(1, math.Abs(want)) }
	a, b := c.Nodes[0], c.Nodes[1]
	if !near(a.PerDecisionUS, 19) || !near(b.PerDecisionUS, 10) || !near(c.PerDecisionUS, 29) {
		t.Errorf("per decision a %v b %v all %v µs, want 19, 10, 29", a.PerDecisionUS, b.PerDecisionUS, c.PerDecisionUS)
	}
	if !near(a.Share, 0.2) || !near(a.IdleShare, 0.01) || c.IdleWindow.D() != 10*time.Second {
		t.Errorf("a: share %v idle %v window %v", a.Share, a.IdleShare, c.IdleWindow.D())
	}
	// a saturates first: 0.99 of a core at 19 µs a decision.
	if want := 0.99 / 19e-6; !near(c.ProjectedPerCore, want) {
		t.Errorf("projected %v, want %v", c.ProjectedPerCore, want)
	}
	var sb strings.Builder
	c.writeSummary(&sb)
	if !strings.Contains(sb.String(), "29.0µs per decision") || !strings.Contains(sb.String(), "52.1k decisions/s") {
		t.Errorf("summary:\n%s", sb.String())
	}
}

// SelfCPU reads this process's CPU time, and MeasureIdle a share of a
// core over its window.
func TestSelfCPUAndIdle(t *testing.T) {
	s, err := SelfCPU{}.CPUSamples()
	if err != nil || len(s) != 1 || s[0].PID != os.Getpid() {
		t.Fatalf("%v %v", s, err)
	}
	idle, err := MeasureIdle(context.Background(), SelfCPU{}, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if sh, ok := idle.Share[os.Getpid()]; !ok || sh < 0 || sh > 2 || idle.Window < 200*time.Millisecond {
		t.Errorf("idle %+v", idle)
	}
}

// With OwnerAware, the HTTP target sends each check to the node the ring
// names its key's owner, and no check elsewhere.
func TestHTTPOwnerAware(t *testing.T) {
	targets := []*countingTarget{newCountingTarget(1e9, 0), newCountingTarget(1e9, 0)}
	var rv httpapi.RingView
	srvs := make([]*httptest.Server, 2)
	for i := range srvs {
		mux := http.NewServeMux()
		mux.Handle("/", fakeAPI(targets[i]))
		mux.HandleFunc("GET /v1/ring", func(w http.ResponseWriter, r *http.Request) { _ = json.NewEncoder(w).Encode(rv) })
		srvs[i] = httptest.NewServer(mux)
		defer srvs[i].Close()
	}
	host := func(s *httptest.Server) string { u, _ := url.Parse(s.URL); return u.Host }
	rv = httpapi.RingView{Version: "1", Members: []httpapi.RingMember{{Name: "b", HTTPAddr: host(srvs[1])}, {Name: "a", HTTPAddr: host(srvs[0])}},
		Owners: []int{0, 1, 1, 0, 1, 0, 0, 1}}
	h, err := NewHTTP(HTTPConfig{URLs: []string{srvs[0].URL, srvs[1].URL}, Conns: 4, OwnerAware: true})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	res, err := Run(context.Background(), Config{Target: h, Policy: "t", Requests: 400, Concurrency: 4, Keys: 64, Seed: 3})
	if err != nil || res.Errors != 0 || res.Checks != 400 {
		t.Fatalf("run: %v, %d checks, %d errors", err, res.Checks, res.Errors)
	}
	// Member 0 of the ring is server 1.
	serverOf := []int{1, 0}
	for i, ct := range targets {
		ct.mu.Lock()
		if len(ct.used) == 0 {
			t.Errorf("server %d got no check", i)
		}
		for key := range ct.used {
			if o := serverOf[rv.Owner("t", key)]; o != i {
				t.Errorf("key %s checked on server %d, its owner is server %d", key, i, o)
			}
		}
		ct.mu.Unlock()
	}
}

// A spawned node is metered by its pid; with Pin it runs on its own CPUs
// and the generator on the others, or, short of CPUs, nothing is pinned.
func TestSpawnCPUAndPin(t *testing.T) {
	var own unix.CPUSet
	if err := unix.SchedGetaffinity(0, &own); err != nil {
		t.Fatal(err)
	}
	var mine []int
	for c := range 1024 {
		if own.IsSet(c) {
			mine = append(mine, c)
		}
	}
	defer func() {
		if err := pinSelf(mine); err != nil {
			t.Error(err)
		}
	}()
	ctx := context.Background()

	s, err := Spawn(ctx, SpawnConfig{Nodes: len(mine), Pin: true, Env: []string{fakeServeEnv + "=1"}, StopTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	samples, err := s.CPUSamples()
	if err != nil || len(samples) != len(mine) || samples[0].PID != s.PIDs()[0] {
		t.Errorf("samples %v %v, pids %v", samples, err, s.PIDs())
	}
	if p := s.Pinning(); !strings.HasPrefix(p, "not pinned") {
		t.Errorf("%d nodes on %d CPUs: pinning %q", len(mine), len(mine), p)
	}
	s.Close()

	if len(mine) < 2 {
		return
	}
	s, err = Spawn(ctx, SpawnConfig{Nodes: 1, Pin: true, Env: []string{fakeServeEnv + "=1"}, StopTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	per := len(mine) / 2
	want := "node 0 CPU " + cpuList(mine[:per]) + ", load generator CPU " + cpuList(mine[per:])
	if p := s.Pinning(); p != want {
		t.Errorf("pinning %q, want %q", p, want)
	}
	var child unix.CPUSet
	if err := unix.SchedGetaffinity(s.PIDs()[0], &child); err != nil {
		t.Fatal(err)
	}
	if child.Count() != per || !child.IsSet(mine[0]) {
		t.Errorf("the node may run on %d CPUs (CPU %d: %v), want %v", child.Count(), mine[0], child.IsSet(mine[0]), mine[:per])
	}
	var self unix.CPUSet
	if err := unix.SchedGetaffinity(0, &self); err != nil {
		t.Fatal(err)
	}
	if self.IsSet(mine[0]) || !self.IsSet(mine[per]) {
		t.Errorf("the generator may still run on CPU %d, or not on %d", mine[0], mine[per])
	}
}
