package httpapi_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
	"github.com/vibewell/ratelimit/internal/testcluster"
	"github.com/vibewell/ratelimit/transport"
)

// httpCluster is an in-process cluster whose nodes serve the HTTP API on
// the addresses they advertise, with peer transports whose counters tell
// how many checks each node forwarded.
type httpCluster struct {
	*testcluster.Cluster
	t       *testing.T
	mu      sync.Mutex
	lns     map[int]net.Listener
	servers map[int]*http.Server
	trs     map[int]*transport.TCP
}

var ownerPolicies = []bucket.Policy{
	{Name: "big", Limit: 1 << 30, Window: time.Hour},
	{Name: "thousand", Limit: 1000, Window: time.Hour},
	{Name: "twenty", Limit: 20, Window: time.Hour},
}

func startHTTPCluster(t *testing.T, n int) *httpCluster {
	t.Helper()
	hc := &httpCluster{t: t, lns: map[int]net.Listener{}, servers: map[int]*http.Server{}, trs: map[int]*transport.TCP{}}
	hc.Cluster = testcluster.Start(t, n, testcluster.Options{
		Policies: ownerPolicies,
		Configure: func(i int, cfg *cluster.Config) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			tr, err := transport.NewTCP(transport.TCPConfig{Addr: "127.0.0.1:0", CallTimeout: cluster.DefaultForwardTimeout})
			if err != nil {
				t.Fatal(err)
			}
			cfg.HTTPAddr = ln.Addr().String()
			cfg.Transport = tr // the node closes it
			hc.mu.Lock()
			hc.lns[i], hc.trs[i] = ln, tr
			hc.mu.Unlock()
		},
	})
	for i := range n {
		hc.serve(i)
	}
	t.Cleanup(func() {
		hc.mu.Lock()
		defer hc.mu.Unlock()
		for _, s := range hc.servers {
			s.Close()
		}
	})
	return hc
}

// serve starts node i's HTTP API on its listener.
func (hc *httpCluster) serve(i int) {
	h, err := httpapi.NewHandler(httpapi.Options{Checker: hc.Node(i)})
	if err != nil {
		hc.t.Fatal(err)
	}
	hc.mu.Lock()
	s := &http.Server{Handler: h}
	hc.servers[i] = s
	ln := hc.lns[i]
	hc.mu.Unlock()
	go s.Serve(ln)
}

// add starts one more node, serves its API and waits for convergence.
func (hc *httpCluster) add() int {
	i := hc.Add()
	hc.serve(i)
	hc.WaitConverged()
	return i
}

// kill stops node i's API (its port refuses connections) and halts it.
func (hc *httpCluster) kill(i int) {
	hc.mu.Lock()
	s := hc.servers[i]
	delete(hc.servers, i)
	hc.mu.Unlock()
	s.Close()
	hc.Kill(i)
}

func (hc *httpCluster) url(i int) string {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return "http://" + hc.lns[i].Addr().String()
}

func (hc *httpCluster) urls() []string {
	var out []string
	for _, i := range hc.Live() {
		out = append(out, hc.url(i))
	}
	return out
}

// forwarded returns the checks all nodes have forwarded to an owner.
func (hc *httpCluster) forwarded() uint64 {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	var n uint64
	for _, tr := range hc.trs {
		n += tr.Stats().ChecksSent
	}
	return n
}

func newOwnerClient(hc *httpCluster) *httpapi.OwnerAwareClient {
	return &httpapi.OwnerAwareClient{Nodes: hc.urls(), HTTPClient: &http.Client{Timeout: 5 * time.Second}, MinRefresh: 10 * time.Millisecond}
}

// waitVersion waits until the client routes by the ring version the live
// nodes publish.
func waitVersion(t *testing.T, hc *httpCluster, c *httpapi.OwnerAwareClient) {
	t.Helper()
	want := func() string { v, _ := hc.Node(hc.Live()[0]).Ring(); return v }
	deadline := time.Now().Add(10 * time.Second)
	for c.Version() != want() {
		if time.Now().After(deadline) {
			t.Fatalf("client ring version %q, nodes publish %q", c.Version(), want())
		}
		// An answer from any node carries its version and starts a refresh.
		if _, err := c.Check(context.Background(), "big", "probe", 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOwnerAwareClientRouting: every check the client sends lands on its
// key's owner (no node forwards one), while the same checks sent to one
// node are mostly forwarded; GET /v1/ring serves the view.
func TestOwnerAwareClientRouting(t *testing.T) {
	hc := startHTTPCluster(t, 3)
	ctx := context.Background()
	c := newOwnerClient(hc)
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Version() == "" {
		t.Fatal("no ring version after Refresh")
	}
	waitVersion(t, hc, c) // a member suspected for a moment changes the ring
	before := hc.forwarded()
	for k := range 300 {
		d, err := c.Check(ctx, "big", "key-"+strconv.Itoa(k), 1)
		if err != nil || !d.Allowed {
			t.Fatalf("check %d: %+v, %v", k, d, err)
		}
	}
	aware := hc.forwarded() - before
	plain := &httpapi.Client{BaseURL: hc.url(0)}
	before = hc.forwarded()
	for k := range 300 {
		if _, err := plain.Check(ctx, "big", "plain-"+strconv.Itoa(k), 1); err != nil {
			t.Fatal(err)
		}
	}
	viaOne := hc.forwarded() - before
	t.Logf("forwarded: %d of 300 checks with the owner-aware client, %d of 300 through one node", aware, viaOne)
	// Zero in steady state; a member that the failure detector of a loaded
	// machine suspects for a moment changes the ring, and a few checks.
	if viaOne < 100 || aware*20 > viaOne {
		t.Errorf("owner-aware: %d of 300 checks forwarded, through one node %d: want about 0 and 200", aware, viaOne)
	}
}

// TestOwnerAwareClientExact: 5000 concurrent checks of a limit of 1000
// admit exactly 1000.
func TestOwnerAwareClientExact(t *testing.T) {
	hc := startHTTPCluster(t, 3)
	c := newOwnerClient(hc)
	var allowed, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				d, err := c.Check(context.Background(), "thousand", "one-key", 1)
				switch {
				case err != nil:
					failed.Add(1)
				case d.Allowed:
					allowed.Add(1)
				}
			}
			_ = w
		}()
	}
	wg.Wait()
	if allowed.Load() != 1000 || failed.Load() != 0 {
		t.Fatalf("allowed %d (failed %d) of 5000 checks of limit 1000, want exactly 1000", allowed.Load(), failed.Load())
	}
}

// TestOwnerAwareClientStaleRingAndChange: checks run while a node joins.
// Every check is answered; keys whose owner did not change admit exactly
// their limit at least (nothing lost) and at most the cluster's bound for
// a hand-off (2 × limit: nothing counted twice admits less, and the client
// sends no check twice); the client learns the new ring from the answers
// and then sends (almost) nothing that needs a forward.
func TestOwnerAwareClientStaleRingAndChange(t *testing.T) {
	hc := startHTTPCluster(t, 3)
	c := newOwnerClient(hc)
	ctx := context.Background()
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	oldVersion := c.Version()
	const keys, perKey, limit = 30, 30, 20
	owners := func() map[string]string {
		m := map[string]string{}
		for k := range keys {
			key := "k" + strconv.Itoa(k)
			m[key] = testcluster.OwnerOf(hc.Node(hc.Live()[0]), "twenty", key)
		}
		return m
	}
	ownersBefore := owners()
	var allowed [keys]atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range perKey {
				d, err := c.Check(ctx, "twenty", "k"+strconv.Itoa(k), 1)
				if err != nil {
					failed.Add(1)
					t.Log(err)
				} else if d.Allowed {
					allowed[k].Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	close(start)
	hc.add() // the ring changes while the checks run
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d checks failed during the ring change", failed.Load())
	}
	ownersAfter := owners()
	moved := 0
	for k := range keys {
		key := "k" + strconv.Itoa(k)
		got := allowed[k].Load()
		if ownersBefore[key] != ownersAfter[key] {
			moved++
		}
		if got < limit || got > 2*limit {
			t.Errorf("key %s (owner %s → %s): %d allowed, want %d to %d", key, ownersBefore[key], ownersAfter[key], got, limit, 2*limit)
		}
	}
	t.Logf("%d of %d keys moved to the new node", moved, keys)

	// The answers told the client its ring was stale.
	waitVersion(t, hc, c)
	if c.Version() == oldVersion {
		t.Fatalf("client still routes by the old ring %s", oldVersion)
	}
	before := hc.forwarded()
	for k := range 200 {
		if _, err := c.Check(ctx, "big", "after-"+strconv.Itoa(k), 1); err != nil {
			t.Fatal(err)
		}
	}
	if fw := hc.forwarded() - before; fw > 20 {
		t.Errorf("after the refresh %d of 200 checks were forwarded, want about 0", fw)
	}
}

// TestOwnerAwareClientNodeKilled: a node dies; checks of the keys it
// owned go through another node (the dead one refused the connection, so
// never saw them) and every check is answered; the client then routes by
// the survivors' ring.
func TestOwnerAwareClientNodeKilled(t *testing.T) {
	hc := startHTTPCluster(t, 3)
	c := newOwnerClient(hc)
	ctx := context.Background()
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	hc.kill(2)
	for k := range 300 {
		if _, err := c.Check(ctx, "big", "k"+strconv.Itoa(k), 1); err != nil {
			var ne net.Error
			t.Fatalf("check %d after a node died: %v (net error %v)", k, err, errors.As(err, &ne))
		}
	}
	hc.WaitConverged()
	waitVersion(t, hc, c)
}
