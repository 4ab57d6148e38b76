package cluster_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
	"github.com/vibewell/ratelimit/internal/testpki"
)

// waitFor polls cond until it holds, failing the test after 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hasPolicy reports whether every live node holds p exactly.
func hasPolicy(c *testcluster.Cluster, p bucket.Policy) bool {
	for _, i := range c.Live() {
		got, ok := c.Node(i).Policy(p.Name)
		if !ok || got.Limit != p.Limit || got.Window != p.Window || len(got.Overrides) != len(p.Overrides) {
			return false
		}
	}
	return true
}

// seeded reports whether every live node holds the seeded table and the
// leader has its full set of voters (3, or every node of a smaller
// cluster).
func seeded(c *testcluster.Cluster) bool {
	live := c.Live()
	for _, i := range live {
		st := c.Node(i).Status()
		if st.PolicyVersion == 0 {
			return false
		}
		if st.Raft != nil && st.Raft.State == "leader" && len(st.Raft.Voters) != min(3, len(live)) {
			return false
		}
	}
	return true
}

func TestRaftChangesVisibleEverywhere(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			c := testcluster.Start(t, size, testcluster.Options{Policies: hourly})
			leader := c.Leader()
			waitFor(t, "seeding", func() bool { return seeded(c) })
			// A busy machine starves raft's heartbeats: leaders step down
			// and are elected again for seconds on end. Each change may
			// take that long; past the default 10 s it would be an error.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, i := range c.Live() {
				p := bucket.Policy{Name: "from-" + strconv.Itoa(i), Limit: int64(10 + i), Window: time.Minute}
				if err := c.Node(i).SetPolicy(ctx, p); err != nil {
					t.Fatalf("SetPolicy on node %d (leader %d): %v", i, leader, err)
				}
				// Read-your-writes on the node that took the change.
				if got, ok := c.Node(i).Policy(p.Name); !ok || got.Limit != p.Limit {
					t.Fatalf("node %d does not see its own acknowledged change", i)
				}
				waitFor(t, "policy "+p.Name+" on every node", func() bool { return hasPolicy(c, p) })
			}
			other := (leader + 1) % size
			if err := c.Node(other).SetOverride(ctx, "from-0", "vip", 99); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "override everywhere", func() bool {
				return hasPolicy(c, bucket.Policy{Name: "from-0", Limit: 10, Window: time.Minute, Overrides: map[string]int64{"vip": 99}})
			})
			if err := c.Node(other).DeletePolicy(ctx, "from-1"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "delete everywhere", func() bool {
				for _, i := range c.Live() {
					if _, ok := c.Node(i).Policy("from-1"); ok {
						return false
					}
				}
				return true
			})
			if _, err := c.Node(0).Allow(ctx, "from-1", "k", 1); !errors.Is(err, cluster.ErrUnknownPolicy) {
				t.Fatalf("check of a deleted policy: %v", err)
			}
			// Invalid changes are refused with the field named.
			var fe *bucket.FieldError
			err := c.Node(other).SetPolicy(ctx, bucket.Policy{Name: "bad", Limit: 5})
			if !errors.As(err, &fe) || fe.Field != "window_ms" {
				t.Fatalf("invalid policy: %v, want a FieldError on window_ms", err)
			}
			if err := c.Node(other).DeleteOverride(ctx, "from-0", "nobody"); !errors.Is(err, cluster.ErrUnknownOverride) {
				t.Fatalf("deleting a missing override: %v", err)
			}
		})
	}
}

func TestRaftLoweredLimitAppliesAtOnce(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly})
	waitFor(t, "seeding", func() bool { return seeded(c) })
	ctx := context.Background()
	for range 20 {
		c.Node(1).Allow(ctx, "small", "k", 1)
	}
	if err := c.Node(2).SetPolicy(ctx, bucket.Policy{Name: "small", Limit: 10, Window: time.Hour}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new limit", func() bool { return hasPolicy(c, bucket.Policy{Name: "small", Limit: 10, Window: time.Hour}) })
	for _, i := range c.Live() {
		d, err := c.Node(i).Allow(ctx, "small", "k", 1)
		if err != nil || d.Allowed || d.Limit != 10 {
			t.Fatalf("node %d after lowering the limit to 10 with 20 counted: %+v %v, want denied", i, d, err)
		}
	}
}

// TestRaftLeaderKilledDuringWrites: every acknowledged write survives the
// leader's crash; writes that failed may or may not have applied (they
// reached a leader that died), and nothing that was never sent appears.
func TestRaftLeaderKilledDuringWrites(t *testing.T) {
	c := testcluster.Start(t, 5, testcluster.Options{Policies: hourly})
	waitFor(t, "seeding", func() bool { return seeded(c) })
	leader := c.Leader()
	writers := []int{}
	for _, i := range c.Live() {
		if i != leader {
			writers = append(writers, i)
		}
	}
	var mu sync.Mutex
	acked := map[string]int64{}
	failed := 0
	var wg sync.WaitGroup
	for w, node := range writers {
		wg.Go(func() {
			for j := range 40 {
				name := fmt.Sprintf("w%d-%d", w, j)
				p := bucket.Policy{Name: name, Limit: int64(j + 1), Window: time.Minute}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := c.Node(node).SetPolicy(ctx, p)
				cancel()
				mu.Lock()
				if err == nil {
					acked[name] = p.Limit
				} else {
					failed++
				}
				mu.Unlock()
				if w == 0 && j == 10 {
					c.Kill(leader)
				}
			}
		})
	}
	wg.Wait()
	newLeader := c.Leader()
	if newLeader == leader {
		t.Fatal("the killed node still leads")
	}
	for name, limit := range acked {
		waitFor(t, "acknowledged "+name, func() bool { return hasPolicy(c, bucket.Policy{Name: name, Limit: limit, Window: time.Minute}) })
	}
	for _, i := range c.Live() {
		for _, p := range c.Node(i).Policies() {
			var w, j int
			if _, err := fmt.Sscanf(p.Name, "w%d-%d", &w, &j); err == nil && (w >= len(writers) || j >= 40 || p.Limit != int64(j+1)) {
				t.Fatalf("node %d holds %+v, which no writer sent", i, p)
			}
		}
	}
	t.Logf("leader killed mid-stream: %d writes acknowledged (all present on every node), %d failed or timed out", len(acked), failed)
}

func TestRaftPersistence(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly, Persist: true})
	waitFor(t, "seeding", func() bool { return seeded(c) })
	ctx := context.Background()
	p := bucket.Policy{Name: "kept", Limit: 7, Window: time.Minute}
	if err := c.Node(1).SetPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "kept everywhere", func() bool { return hasPolicy(c, p) })

	// One node restarted keeps the table.
	c.Kill(2)
	c.Restart(2)
	c.WaitConverged()
	waitFor(t, "kept after one restart", func() bool { return hasPolicy(c, p) })

	// The whole cluster restarted at once keeps it too.
	for _, i := range c.Live() {
		c.Kill(i)
	}
	for i := range 3 {
		c.Restart(i)
	}
	c.WaitConverged()
	c.Leader()
	waitFor(t, "kept after a full restart", func() bool { return hasPolicy(c, p) })
	q := bucket.Policy{Name: "after", Limit: 3, Window: time.Minute}
	if err := c.Node(0).SetPolicy(ctx, q); err != nil {
		t.Fatalf("write after a full restart: %v", err)
	}
}

func TestRaftLateJoinerGetsTable(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly})
	waitFor(t, "seeding", func() bool { return seeded(c) })
	p := bucket.Policy{Name: "early", Limit: 4, Window: time.Minute}
	if err := c.Node(0).SetPolicy(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	c.Add()
	c.WaitConverged()
	waitFor(t, "late joiner has the table", func() bool { return hasPolicy(c, p) })
}

// TestRaftVoters: seven nodes have exactly three voters, and a crashed
// voter is replaced by a non-voter once gone for VoterGrace.
func TestRaftVoters(t *testing.T) {
	c := testcluster.Start(t, 7, testcluster.Options{Policies: hourly})
	voters := func() (v, nv []string) {
		st := c.Node(c.Leader()).Status().Raft
		return st.Voters, st.NonVoters
	}
	waitFor(t, "3 voters and 4 non-voters", func() bool {
		v, nv := voters()
		return len(v) == 3 && len(nv) == 4
	})
	v, _ := voters()
	var victim int
	for _, i := range c.Live() {
		if c.Node(i).Name() == v[0] && i != c.Leader() {
			victim = i
		} else if c.Node(i).Name() == v[1] && i != c.Leader() {
			victim = i
		}
	}
	dead := c.Node(victim).Name()
	c.Kill(victim)
	waitFor(t, "the dead voter replaced", func() bool {
		v, nv := voters()
		if len(v) != 3 || len(nv) != 3 {
			return false
		}
		for _, name := range append(v, nv...) {
			if name == dead {
				return false
			}
		}
		return true
	})
}

// TestRaftOverTLS: with PeerTLS, raft runs over mutual TLS: a follower's
// write reaches every node, while a plain raft peer, a TLS client that
// does not trust the cluster's CA, and one without a certificate of it
// are all refused at the raft port.
func TestRaftOverTLS(t *testing.T) {
	ca := testpki.NewCA(t)
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly, Configure: func(i int, cfg *cluster.Config) {
		cfg.PeerTLS = ca.Mutual(t, cfg.NodeName)
	}})
	waitFor(t, "seeding", func() bool { return seeded(c) })
	p := bucket.Policy{Name: "tls", Limit: 7, Window: time.Hour}
	for _, i := range c.Live() {
		if st := c.Node(i).Status(); st.Raft != nil && st.Raft.State != "leader" {
			if err := c.Node(i).SetPolicy(context.Background(), p); err != nil {
				t.Fatalf("SetPolicy on follower %d: %v", i, err)
			}
			break
		}
	}
	waitFor(t, "the policy on every node", func() bool { return hasPolicy(c, p) })

	addr := c.Node(0).Addrs().Raft
	plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var resp raft.RequestVoteResponse
	req := raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(plain.LocalAddr())}, Term: 1 << 40}
	if err := plain.RequestVote("x", raft.ServerAddress(addr), &req, &resp); err == nil {
		t.Errorf("a plain raft peer vote request was answered: %+v", resp)
	}

	other := testpki.NewCA(t).Mutual(t, "intruder")
	if conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: other.RootCAs, Certificates: other.Certificates, ServerName: "127.0.0.1"}); err == nil {
		conn.Close()
		t.Error("a client trusting another CA completed a handshake with the raft port")
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
	if err == nil {
		// TLS 1.3: the server checks the client's certificate after the
		// client's handshake ends; the refusal comes on the first read.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = conn.Write([]byte{0})
		if _, err = conn.Read(make([]byte, 1)); err == nil {
			t.Error("a client without a certificate read from the raft port")
		}
		conn.Close()
	}
}
