package cluster_test

// The security suite: each attack on the cluster ports, made by a stranger
// (no cluster key, or another one; no certificate of the team's CA),
// against the default configuration (a cluster key) and against mutual TLS
// with the team's own PKI. Each test asserts the attack is refused and
// nothing changed: the policy table is the same on every node, the keys
// that were used up still deny, and other checks are still answered.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
	"github.com/vibewell/ratelimit/internal/testpki"
	"github.com/vibewell/ratelimit/transport"
)

var guarded = []bucket.Policy{
	{Name: "auth", Limit: 5, Window: time.Hour},
	{Name: "default", Limit: 1000, Window: time.Hour},
}

// secMode is a secured configuration under attack, with the credentials a
// stranger might try.
type secMode struct {
	name string
	opts func(t *testing.T) testcluster.Options
	// peerTLS and raftTLS are a stranger's client configurations: of a
	// node with another cluster key, or with a certificate of another CA.
	peerTLS, raftTLS func(t *testing.T) *tls.Config
	// rogue configures a node that tries to join without the credentials.
	rogue func(t *testing.T, cfg *cluster.Config)
}

func otherKey(t *testing.T) []byte {
	k, err := cluster.NewClusterKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// stranger lets a client skip its own check of the server's certificate,
// so that the refusal tested is the server's.
func stranger(c *tls.Config) *tls.Config {
	c = c.Clone()
	c.InsecureSkipVerify = true
	c.VerifyPeerCertificate = nil
	c.RootCAs = nil
	return c
}

var secModes = []secMode{
	{
		name: "cluster-key",
		opts: func(*testing.T) testcluster.Options { return testcluster.Options{Policies: guarded} },
		peerTLS: func(t *testing.T) *tls.Config {
			return stranger(cluster.StrangerTLS(otherKey(t), "mallory", false))
		},
		raftTLS: func(t *testing.T) *tls.Config {
			return stranger(cluster.StrangerTLS(otherKey(t), "mallory", true))
		},
		rogue: func(t *testing.T, cfg *cluster.Config) { cfg.ClusterKey = otherKey(t) },
	},
	{
		name: "own-pki",
		opts: func(t *testing.T) testcluster.Options {
			ca := testpki.NewCA(t)
			gossipKey := []byte("0123456789abcdef0123456789abcdef")
			return testcluster.Options{Policies: guarded, Configure: func(i int, cfg *cluster.Config) {
				cfg.ClusterKey = nil
				cfg.SecretKey = gossipKey
				cfg.PeerTLS = ca.Mutual(t, "node-"+strconv.Itoa(i))
			}}
		},
		peerTLS: func(t *testing.T) *tls.Config { return stranger(testpki.NewCA(t).Mutual(t, "mallory")) },
		raftTLS: func(t *testing.T) *tls.Config { return stranger(testpki.NewCA(t).Mutual(t, "mallory")) },
		rogue: func(t *testing.T, cfg *cluster.Config) {
			cfg.SecretKey = []byte("another gossip key, 32 bytes....")
			cfg.PeerTLS = testpki.NewCA(t).Mutual(t, "mallory")
		},
	},
}

// target is a 3-node cluster with keys used up, and what must not change.
type target struct {
	c        *testcluster.Cluster
	policies string
	victims  []string
}

func newTarget(t *testing.T, opts testcluster.Options) *target {
	t.Helper()
	configure := opts.Configure
	opts.Configure = func(i int, cfg *cluster.Config) {
		// A busy machine must not turn checks into failure-mode decisions,
		// nor a slow node into a dead one (which moves its keys): the
		// production gossip and raft timings, and a generous forward
		// timeout.
		cfg.Gossip = cluster.GossipConfig{}
		cfg.RaftTimeout = 0
		cfg.ForwardTimeout = 2 * time.Second
		if configure != nil {
			configure(i, cfg)
		}
	}
	c := testcluster.Start(t, 3, opts)
	for deadline := time.Now().Add(20 * time.Second); !benchSeeded(c); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("policy table not seeded, or leader without 3 voters, after 20 s")
		}
	}
	tg := &target{c: c}
	ctx := context.Background()
	for i := range 6 {
		key := "victim-" + strconv.Itoa(i)
		if d, err := c.Node(i%3).Allow(ctx, "auth", key, 5); err != nil || !d.Allowed {
			t.Fatalf("using up %s: %+v, %v", key, d, err)
		}
		tg.victims = append(tg.victims, key)
	}
	// Every node has applied the same log (the seed entries): the attacks
	// must leave it there.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		idx := map[uint64]bool{}
		for i := range 3 {
			if st := c.Node(i).Status().Raft; st != nil {
				idx[st.AppliedIndex] = true
			}
		}
		if len(idx) == 1 && !idx[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes did not apply the same log: %v", idx)
		}
	}
	tg.policies = policyTable(c.Node(0))
	return tg
}

func policyTable(n *cluster.Node) string {
	b, _ := json.Marshal(n.Policies())
	return string(b)
}

// assertUnchanged checks every live node: the same policy table, the used
// up keys still denied, and a fresh key allowed (checks still answered).
func (tg *target) assertUnchanged(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, i := range tg.c.Live() {
		n := tg.c.Node(i)
		if got := policyTable(n); got != tg.policies {
			t.Errorf("node %d: policy table changed:\n got %s\nwant %s", i, got, tg.policies)
		}
		for _, key := range tg.victims {
			if d, err := n.Allow(ctx, "auth", key, 1); err != nil || d.Allowed {
				t.Errorf("node %d: used-up key %s: allowed=%v err=%v, want denied", i, key, d.Allowed, err)
			}
		}
		key := "bystander-" + strconv.Itoa(i) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		if d, err := n.Allow(ctx, "default", key, 1); err != nil || !d.Allowed {
			t.Errorf("node %d: a fresh check: allowed=%v err=%v, want allowed", i, d.Allowed, err)
		}
	}
}

// callFrame is a raw peer-transport call frame (see package transport).
func callFrame(t *testing.T, method string, body []byte) []byte {
	t.Helper()
	payload, err := msgpack.Marshal([]any{method, body})
	if err != nil {
		t.Fatal(err)
	}
	f := binary.BigEndian.AppendUint32(nil, uint32(6+len(payload)))
	f = append(f, transport.Version, 3, 0, 0, 0, 7)
	return append(f, payload...)
}

// sendRaw writes frame on a connection to addr (TLS with cfg, else plain)
// and reports whether any call answer (frame type 4) came back.
func sendRaw(t *testing.T, addr string, cfg *tls.Config, frame []byte) (answered bool) {
	t.Helper()
	var nc net.Conn
	var err error
	if cfg != nil {
		nc, err = tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	} else {
		nc, err = net.DialTimeout("tcp", addr, 2*time.Second)
	}
	if err != nil {
		return false // refused at the handshake
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := nc.Write(frame); err != nil {
		return false
	}
	var hdr [10]byte
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		return false
	}
	return hdr[5] == 4
}

// TestAttackUnauthenticatedPolicyWrite (attack 1): a policy-write frame on
// the leader's peer port, in the clear and over TLS with a stranger's
// certificate, setting auth to 4294967295 a millisecond, and one deleting
// it; both are refused and the table is unchanged.
func TestAttackUnauthenticatedPolicyWrite(t *testing.T) {
	for _, m := range secModes {
		t.Run(m.name, func(t *testing.T) {
			tg := newTarget(t, m.opts(t))
			leader := tg.c.Node(tg.c.Leader())
			raise, _ := json.Marshal(map[string]any{"op": "set_policy", "policy": map[string]any{"name": "auth", "limit": 4294967295, "window": 1e6}})
			del, _ := json.Marshal(map[string]any{"op": "delete_policy", "name": "auth"})
			for _, body := range [][]byte{raise, del, []byte("{not json")} {
				for _, cfg := range []*tls.Config{nil, m.peerTLS(t)} {
					if sendRaw(t, leader.Addrs().Peer, cfg, callFrame(t, "policy.apply", body)) {
						t.Errorf("a stranger's policy write (tls=%v) was answered", cfg != nil)
					}
				}
			}
			time.Sleep(200 * time.Millisecond) // an accepted write would be applied by now
			tg.assertUnchanged(t)
			if leader.Refused("peer", "handshake") == 0 {
				t.Error("the refused connections were not counted")
			}
		})
	}
}

// strangerRaft returns a raft transport of a stranger (plain TCP when cfg
// is nil).
func strangerRaft(t *testing.T, cfg *tls.Config) *raft.NetworkTransport {
	t.Helper()
	stream, err := cluster.StrangerRaftStream(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := raft.NewNetworkTransport(stream, 1, 2*time.Second, io.Discard)
	t.Cleanup(func() { tr.Close() })
	return tr
}

// junkEntries returns n one-megabyte log entries.
func junkEntries(n int) []*raft.Log {
	var out []*raft.Log
	for i := range n {
		out = append(out, &raft.Log{Index: uint64(1000 + i), Term: 1000, Type: raft.LogCommand, Data: make([]byte, 1<<20)})
	}
	return out
}

// TestAttackForgedRaft (attack 3): a forged AppendEntries with a higher
// term, carrying a policy change, and a RequestVote with
// LeadershipTransfer, sent to a follower in the clear and with a
// stranger's certificate: each fails, the leader stays, and nothing
// changes.
func TestAttackForgedRaft(t *testing.T) {
	for _, m := range secModes {
		t.Run(m.name, func(t *testing.T) {
			tg := newTarget(t, m.opts(t))
			li := tg.c.Leader()
			leaderName := tg.c.Node(li).Name()
			fi := (li + 1) % 3
			f := tg.c.Node(fi)
			cmd, _ := json.Marshal(map[string]any{"op": "set_policy", "policy": map[string]any{"name": "auth", "limit": 4294967295, "window": 1e6}})
			for _, cfg := range []*tls.Config{nil, m.raftTLS(t)} {
				tr := strangerRaft(t, cfg)
				target := raft.ServerAddress(f.Addrs().Raft)
				ae := &raft.AppendEntriesRequest{
					RPCHeader: raft.RPCHeader{ID: []byte("mallory"), Addr: []byte(tr.LocalAddr())},
					Term:      1000, PrevLogEntry: 0, PrevLogTerm: 0, LeaderCommitIndex: 1001,
					Entries: []*raft.Log{{Index: 1000, Term: 1000, Type: raft.LogCommand, Data: cmd}},
				}
				if err := tr.AppendEntries(raft.ServerID(f.Name()), target, ae, &raft.AppendEntriesResponse{}); err == nil {
					t.Errorf("a stranger's AppendEntries (tls=%v) was answered", cfg != nil)
				}
				rv := &raft.RequestVoteRequest{
					RPCHeader: raft.RPCHeader{ID: []byte("mallory"), Addr: []byte(tr.LocalAddr())},
					Term:      1001, LastLogIndex: 1 << 40, LastLogTerm: 1000, LeadershipTransfer: true,
				}
				if err := tr.RequestVote(raft.ServerID(f.Name()), target, rv, &raft.RequestVoteResponse{}); err == nil {
					t.Errorf("a stranger's RequestVote (tls=%v) was answered", cfg != nil)
				}
			}
			time.Sleep(500 * time.Millisecond) // an election would have started
			for _, i := range tg.c.Live() {
				if st := tg.c.Node(i).Status(); st.Raft == nil || st.Raft.Leader != leaderName {
					t.Errorf("node %d: leader is %+v, want %s unchanged", i, st.Raft, leaderName)
				}
			}
			tg.assertUnchanged(t)
			if f.Refused("raft", "auth") == 0 {
				t.Error("the refused raft connections were not counted")
			}
		})
	}
}

// TestAttackRaftJunkEntries (attack 5, raft): a stranger sends 1 MiB junk
// entries to a follower; none reaches its log.
func TestAttackRaftJunkEntries(t *testing.T) {
	for _, m := range secModes {
		t.Run(m.name, func(t *testing.T) {
			tg := newTarget(t, m.opts(t))
			f := tg.c.Node((tg.c.Leader() + 1) % 3)
			before := f.Status().PolicyVersion
			for _, cfg := range []*tls.Config{nil, m.raftTLS(t)} {
				tr := strangerRaft(t, cfg)
				for range 8 {
					ae := &raft.AppendEntriesRequest{
						RPCHeader: raft.RPCHeader{ID: []byte("mallory"), Addr: []byte(tr.LocalAddr())},
						Term:      1000, Entries: junkEntries(4), LeaderCommitIndex: 2000,
					}
					if err := tr.AppendEntries(raft.ServerID(f.Name()), raft.ServerAddress(f.Addrs().Raft), ae, &raft.AppendEntriesResponse{}); err == nil {
						t.Fatalf("junk entries (tls=%v) were answered", cfg != nil)
					}
				}
			}
			// The junk was numbered from 1000, far past the real log.
			if st := f.Status(); st.PolicyVersion != before || st.Raft.AppliedIndex >= 1000 {
				t.Errorf("policy version %d → %d, applied index %d: junk reached the log", before, st.PolicyVersion, st.Raft.AppliedIndex)
			}
			tg.assertUnchanged(t)
		})
	}
}

// TestAttackRogueMember (attack 4): a node without the credentials, and
// one with no key at all (Insecure), try to join through a member: they
// stay alone, the ring keeps its three members, and the refusals are
// counted.
func TestAttackRogueMember(t *testing.T) {
	for _, m := range secModes {
		t.Run(m.name, func(t *testing.T) {
			tg := newTarget(t, m.opts(t))
			seed := tg.c.Node(0)
			var rogues []*cluster.Node
			for i, configure := range []func(*cluster.Config){
				func(cfg *cluster.Config) { m.rogue(t, cfg) },
				func(cfg *cluster.Config) { cfg.Insecure = true },
			} {
				cfg := cluster.Config{
					NodeName: "rogue-" + strconv.Itoa(i), Policies: guarded, GossipAddr: "127.0.0.1:0",
					Seeds: []string{seed.Addrs().Gossip}, Gossip: cluster.LocalGossip(), RaftTimeout: 200 * time.Millisecond,
				}
				configure(&cfg)
				r, err := cluster.Start(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Halt() })
				rogues = append(rogues, r)
			}
			deadline := time.Now().Add(3 * time.Second) // several join attempts and gossip rounds
			for time.Now().Before(deadline) {
				time.Sleep(250 * time.Millisecond)
				for _, i := range tg.c.Live() {
					for _, mb := range tg.c.Node(i).Status().Members {
						if strings.HasPrefix(mb.Name, "rogue") {
							t.Fatalf("node %d lists %s as a member", i, mb.Name)
						}
					}
					if st := tg.c.Node(i).Status(); st.RingMembers > 3 {
						t.Fatalf("node %d: ring of %d; a rogue joined", i, st.RingMembers)
					}
				}
			}
			for _, r := range rogues {
				if r.Ready() || len(r.Status().Members) != 1 {
					t.Errorf("%s: ready=%v, %d members; want alone", r.Name(), r.Ready(), len(r.Status().Members))
				}
			}
			if seed.Refused("gossip", "auth") == 0 {
				t.Error("the rogue's gossip was not counted as refused")
			}
			tg.assertUnchanged(t)
		})
	}
}

// Bound of the flood test: 250 connections may take at most this much
// heap on the attacked node (each is a goroutine and a 64 KiB read buffer
// at most: 16 MiB; before the transport bounded them, the same flood took
// about 1 GiB).
const floodHeapBound = 64 << 20

// TestAttackFrameFlood (attack 5): 250 connections announce 4 MiB frames
// on a node's peer port and send a few bytes of them. The node's heap
// stays within floodHeapBound, the connections are closed (at the
// handshake when the port needs credentials, at ReadTimeout on an
// insecure node), and checks are answered meanwhile.
func TestAttackFrameFlood(t *testing.T) {
	modes := []struct {
		name string
		opts func(t *testing.T) testcluster.Options
	}{
		{secModes[0].name, secModes[0].opts},
		{secModes[1].name, secModes[1].opts},
		{"insecure", func(t *testing.T) testcluster.Options {
			return testcluster.Options{Policies: guarded, Insecure: true, Configure: func(i int, cfg *cluster.Config) {
				tr, err := transport.NewTCP(transport.TCPConfig{ReadTimeout: time.Second, CallTimeout: cfg.ForwardTimeout})
				if err != nil {
					t.Fatal(err)
				}
				cfg.Transport = tr
			}}
		}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			tg := newTarget(t, m.opts(t))
			n := tg.c.Node(1)
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)

			hdr := binary.BigEndian.AppendUint32(nil, 4<<20-4)
			hdr = append(hdr, transport.Version, 3, 0, 0, 0, 1, 0x92, 0xa1, 'x')
			var conns []net.Conn
			for range 250 {
				nc, err := net.DialTimeout("tcp", n.Addrs().Peer, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, nc)
				_, _ = nc.Write(hdr)
			}
			defer func() {
				for _, nc := range conns {
					nc.Close()
				}
			}()
			time.Sleep(200 * time.Millisecond)
			var during runtime.MemStats
			runtime.ReadMemStats(&during)
			if grew := int64(during.HeapInuse) - int64(before.HeapInuse); grew > floodHeapBound {
				t.Errorf("heap grew by %d MiB under the flood, bound %d MiB", grew>>20, floodHeapBound>>20)
			}
			tg.assertUnchanged(t) // checks answered while the connections are open

			var wg sync.WaitGroup
			var mu sync.Mutex
			open := 0
			for _, nc := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.Copy(io.Discard, nc); err != nil && isTimeout(err) {
						mu.Lock()
						open++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if open > 0 {
				t.Errorf("%d of 250 connections still open after 10 s", open)
			}
			tg.assertUnchanged(t)
		})
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestNoKeyNoJoin: a node with Seeds and no key is refused at start with
// ErrNoClusterKey; an insecure one on a public address with
// ErrInsecureAddr.
func TestNoKeyNoJoin(t *testing.T) {
	_, err := cluster.Start(context.Background(), cluster.Config{GossipAddr: "127.0.0.1:0", Seeds: []string{"127.0.0.1:1"}})
	if !errorsIs(err, cluster.ErrNoClusterKey) {
		t.Errorf("Seeds without a key: %v, want ErrNoClusterKey", err)
	}
	_, err = cluster.Start(context.Background(), cluster.Config{GossipAddr: "0.0.0.0:0", Insecure: true})
	if !errorsIs(err, cluster.ErrInsecureAddr) {
		t.Errorf("Insecure on 0.0.0.0: %v, want ErrInsecureAddr", err)
	}
	_, err = cluster.Start(context.Background(), cluster.Config{GossipAddr: "127.0.0.1:0", ClusterKey: []byte("short")})
	if !errorsIs(err, cluster.ErrBadClusterKey) {
		t.Errorf("a 5-byte key: %v, want ErrBadClusterKey", err)
	}
	if _, err := cluster.ParseClusterKey("!!"); !errorsIs(err, cluster.ErrBadClusterKey) {
		t.Errorf("ParseClusterKey(!!): %v", err)
	}
}

// TestClusterKeyKeptInDataDir: a node that starts a cluster generates a
// key once, keeps it in its data dir (0600), and finds it on restart.
func TestClusterKeyKeptInDataDir(t *testing.T) {
	dir := t.TempDir()
	cfg := cluster.Config{NodeName: "keeper", GossipAddr: "127.0.0.1:0", DataDir: dir, Gossip: cluster.LocalGossip()}
	n := start(t, cfg)
	k1, gen := n.ClusterKey()
	if len(k1) != cluster.ClusterKeySize || !gen {
		t.Fatalf("first start: key of %d bytes, generated=%v", len(k1), gen)
	}
	n.Close(context.Background())
	fi, err := osStat(dir + "/cluster.key")
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	n2 := start(t, cfg)
	k2, gen := n2.ClusterKey()
	if string(k1) != string(k2) || gen {
		t.Errorf("restart: same key %v, generated %v; want the kept key", string(k1) == string(k2), gen)
	}
	if back, err := cluster.ParseClusterKey(cluster.EncodeClusterKey(k1)); err != nil || string(back) != string(k1) {
		t.Errorf("printable form does not round-trip: %v", err)
	}
}

// TestPeerNameIsAuthenticated: a handler learns the sending node's name
// from its certificate.
func TestPeerNameIsAuthenticated(t *testing.T) {
	key := otherKey(t)
	srvTLS := cluster.StrangerTLS(key, "alice", false)
	cliTLS := cluster.StrangerTLS(key, "bob", false)
	srv, err := transport.NewTCP(transport.TCPConfig{TLS: srvTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	got := make(chan string, 1)
	go srv.Serve(nameHandler(got))
	cli, err := transport.NewTCP(transport.TCPConfig{TLS: cliTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Call(context.Background(), srv.Addr(), "who", nil); err != nil {
		t.Fatal(err)
	}
	if name := <-got; name != "bob" {
		t.Errorf("PeerName = %q, want bob", name)
	}
}

type nameHandler chan string

func (h nameHandler) HandleChecks(context.Context, []transport.CheckItem, []transport.CheckResult) {}
func (h nameHandler) HandleCall(ctx context.Context, _ string, _ []byte) ([]byte, error) {
	name, ok := transport.PeerName(ctx)
	if !ok {
		name = "none"
	}
	h <- name
	return nil, nil
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func osStat(path string) (os.FileInfo, error) { return os.Stat(path) }
