package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
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
// Every check is answered. Of a policy that never denies, no key counts a
// check twice (at most the checks sent: a hand-off merges, never adds, and
// the client sends no check twice), and a key whose owner did not change
// counts every check (nothing lost). Of a limit of 20, keys admit their
// limit at least and at most the cluster's bound for a hand-off (2 x
// limit). The client learns the new ring from the answers and then sends
// (almost) nothing that needs a forward.
func TestOwnerAwareClientStaleRingAndChange(t *testing.T) {
	hc := startHTTPCluster(t, 3)
	c := newOwnerClient(hc)
	ctx := context.Background()
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	oldVersion := c.Version()
	const keys, perKey, limit = 30, 30, 20
	owners := func(policy string) map[string]string {
		m := map[string]string{}
		for k := range keys {
			key := "k" + strconv.Itoa(k)
			m[key] = testcluster.OwnerOf(hc.Node(hc.Live()[0]), policy, key)
		}
		return m
	}
	ownersBefore, bigBefore := owners("twenty"), owners("big")
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
				for _, policy := range []string{"twenty", "big"} {
					d, err := c.Check(ctx, policy, "k"+strconv.Itoa(k), 1)
					switch {
					case err != nil:
						failed.Add(1)
						t.Log(err)
					case policy == "twenty" && d.Allowed:
						allowed[k].Add(1)
					case policy == "big" && !d.Allowed:
						failed.Add(1)
						t.Logf("big: k%d denied", k)
					}
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
	ownersAfter, bigAfter := owners("twenty"), owners("big")
	// The counts of "big", read with a peek through the client.
	bigMoved := 0
	for k := range keys {
		key := "k" + strconv.Itoa(k)
		d, err := c.Check(ctx, "big", key, 0)
		if err != nil {
			t.Fatal(err)
		}
		counted := d.Limit - d.Remaining
		moved := bigBefore[key] != bigAfter[key]
		if moved {
			bigMoved++
		}
		if counted > perKey || (!moved && counted != perKey) {
			t.Errorf("big %s (owner %s → %s): counted %d of %d checks", key, bigBefore[key], bigAfter[key], counted, perKey)
		}
	}
	t.Logf("big: %d of %d keys moved", bigMoved, keys)
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

// TestRingNeedsNoToken: GET /v1/ring is as open as POST /v1/check, even
// when the admin and client tokens are set, since a client that may check
// needs it to route; it tells only the members' names and HTTP addresses
// and the partition table, never their gossip, peer or raft addresses
// (those stay behind the admin token, on GET /v1/cluster).
func TestRingNeedsNoToken(t *testing.T) {
	hc := startHTTPCluster(t, 3)
	n := hc.Node(0)
	h, err := httpapi.NewHandler(httpapi.Options{Checker: n, AdminToken: "admin-secret", ClientToken: "client-secret",
		Status: func() any { return n.Status() }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string) (int, []byte) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get("/v1/cluster"); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/cluster without the admin token: %d, want 401", code)
	}
	code, body := get("/v1/ring")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/ring without a token: %d %s", code, body)
	}
	var raw struct {
		Members []map[string]any `json:"members"`
		Owners  []int            `json:"owners"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Members) != 3 || len(raw.Owners) == 0 {
		t.Fatalf("ring %s", body)
	}
	for _, m := range raw.Members {
		for field := range m {
			if field != "name" && field != "http_addr" {
				t.Errorf("a ring member tells %q: %v", field, m)
			}
		}
	}
	for i := range 3 {
		a := hc.Node(i).Addrs()
		for _, addr := range []string{a.Gossip, a.Peer, a.Raft} {
			if addr != "" && strings.Contains(string(body), addr) {
				t.Errorf("GET /v1/ring tells the internal address %s", addr)
			}
		}
	}
}
