// Package testcluster runs clusters of in-process nodes on loopback for
// tests: start, kill, leave, restart, partition, and wait until every node
// agrees on the ring.
package testcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/crash"
	"github.com/vibewell/ratelimit/transport"
)

// Options configure a test cluster. The zero value runs nodes on
// 127.0.0.1 with free ports, TCP between them, and tight gossip timings.
type Options struct {
	// Policies of every node. Default: cluster.DefaultPolicies().
	Policies []bucket.Policy
	// InMemory carries checks over a transport.Network instead of TCP, so
	// that Partition can cut nodes apart (gossip stays on loopback UDP/TCP).
	InMemory bool
	// Configure, when set, adjusts each node's config before it starts.
	Configure func(i int, cfg *cluster.Config)
	// Logger for the nodes. Default: discard.
	Logger *slog.Logger
	// Persist gives each node a data directory (kept across Restart), so
	// that raft keeps its log and snapshots on disk.
	Persist bool
	// ClusterKey is every node's cluster key. Default: a new key for each
	// cluster (Key returns it).
	ClusterKey []byte
	// Insecure runs the nodes without a key (cluster.Config.Insecure), for
	// comparisons; ClusterKey is then ignored.
	Insecure bool
}

// addrs are the addresses a node slot had, reused by Restart so that raft
// finds its peers where its log says they are.
type addrs struct{ gossip, peer, raft, dataDir string }

// Cluster is a set of in-process nodes. Methods are safe for concurrent
// use, but a node index refers to a slot whose node may be replaced by
// Restart.
type Cluster struct {
	t    testing.TB
	opts Options
	net  *transport.Network

	mu    sync.Mutex
	nodes []*cluster.Node // nil: killed or left
	crash []*crash.Switch // each node's crash switch
	names []string
	addrs []addrs
	seq   int
}

// Key returns the cluster key every node is started with (nil when
// Insecure).
func (c *Cluster) Key() []byte {
	if c.opts.Insecure {
		return nil
	}
	return c.opts.ClusterKey
}

// Start starts n nodes, joins them, and waits until they converge and
// raft has settled: a leader has every node in its configuration, with
// the default 3 voters (or all nodes, if fewer), and every node has
// applied the same log, the seed included. A test then starts from a
// quiet log. The cluster is closed by t.Cleanup.
func Start(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, opts: opts}
	if c.opts.ClusterKey == nil && !c.opts.Insecure {
		k, err := cluster.NewClusterKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		c.opts.ClusterKey = k
	}
	if opts.InMemory {
		c.net = transport.NewNetwork()
	}
	t.Cleanup(c.Close)
	for range n {
		c.Add()
	}
	c.WaitConverged()
	c.waitRaft()
	return c
}

// waitRaft waits until raft has settled (see Start); it fails the test
// after 30 s.
func (c *Cluster) waitRaft() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.raftSettled()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("testcluster: raft not settled: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *Cluster) raftSettled() error {
	live := c.Live()
	applied := map[uint64]bool{}
	leader := false
	for _, i := range live {
		st := c.Node(i).Status()
		if st.Raft == nil {
			return nil // no raft: nothing to settle
		}
		if st.PolicyVersion == 0 {
			return fmt.Errorf("node %d: no policy table yet", i)
		}
		applied[st.Raft.AppliedIndex] = true
		if st.Raft.State != "leader" {
			continue
		}
		leader = true
		if v, nv := len(st.Raft.Voters), len(st.Raft.NonVoters); v+nv != len(live) || v != min(3, len(live)) {
			return fmt.Errorf("leader %d: %d voters, %d non-voters, %d nodes", i, v, nv, len(live))
		}
	}
	if !leader {
		return errors.New("no leader")
	}
	if len(applied) != 1 {
		return fmt.Errorf("applied indexes %v", applied)
	}
	return nil
}

// Add starts one more node, joined through the live nodes, and returns
// its index. It does not wait for convergence.
func (c *Cluster) Add() int {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.nodes)
	c.seq++
	name := "node-" + strconv.Itoa(i) + "-" + strconv.Itoa(c.seq)
	c.nodes = append(c.nodes, nil)
	c.crash = append(c.crash, nil)
	c.names = append(c.names, name)
	a := addrs{gossip: "127.0.0.1:0", peer: "127.0.0.1:0", raft: "127.0.0.1:0"}
	if c.opts.Persist {
		a.dataDir = c.t.TempDir()
	}
	c.addrs = append(c.addrs, a)
	c.mu.Unlock()
	c.startAt(i, name)
	return i
}

func (c *Cluster) startAt(i int, name string) {
	c.t.Helper()
	c.mu.Lock()
	a := c.addrs[i]
	c.mu.Unlock()
	cfg := cluster.LocalConfig()
	cfg.NodeName = name
	cfg.Policies = c.opts.Policies
	cfg.GossipAddr, cfg.PeerAddr, cfg.RaftAddr = a.gossip, a.peer, a.raft
	cfg.DataDir = a.dataDir
	cfg.Gossip = Gossip()
	cfg.RaftTimeout = RaftTimeout
	cfg.VoterGrace = time.Second
	cfg.Logger = c.opts.Logger
	cfg.Seeds = c.seeds()
	cfg.ClusterKey = c.opts.ClusterKey
	cfg.Insecure = c.opts.Insecure
	if c.opts.Insecure {
		cfg.ClusterKey = nil
	}
	if c.net != nil {
		cfg.Transport = c.net.Transport(name)
	}
	if c.opts.Configure != nil {
		c.opts.Configure(i, &cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sw := new(crash.Switch)
	n, err := cluster.Start(crash.With(ctx, sw), cfg)
	if err != nil {
		c.t.Fatalf("testcluster: start node %d: %v", i, err)
	}
	c.mu.Lock()
	c.nodes[i], c.crash[i] = n, sw
	addrs := n.Addrs()
	c.addrs[i].gossip, c.addrs[i].raft = addrs.Gossip, addrs.Raft
	if c.net == nil {
		c.addrs[i].peer = addrs.Peer
	}
	c.mu.Unlock()
}

// RaftTimeout is the nodes' raft timeout: an election takes one to two of
// it. Shorter, a busy machine (a loaded 2-core CI runner) starves the
// heartbeats and leaders come and go.
const RaftTimeout = time.Second

// Gossip returns the nodes' membership timings: a crash is detected in
// about 2-4 s. They are cluster.LocalGossip's, with probes that wait long
// enough for a node of a busy machine to answer: with LocalGossip's 150 ms,
// at load 10 on 2 cores, nodes are declared dead and refute it over and
// over, and the ring never settles.
func Gossip() cluster.GossipConfig {
	g := cluster.LocalGossip()
	g.ProbeInterval = 500 * time.Millisecond
	g.ProbeTimeout = 400 * time.Millisecond
	g.SuspicionMult = 4
	g.TCPTimeout = 2 * time.Second
	return g
}

func (c *Cluster) seeds() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s []string
	for _, n := range c.nodes {
		if n != nil {
			s = append(s, n.Addrs().Gossip)
		}
	}
	return s
}

// Node returns the node at index i, or nil if it is down.
func (c *Cluster) Node(i int) *cluster.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Live returns the indexes of the running nodes.
func (c *Cluster) Live() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i, n := range c.nodes {
		if n != nil {
			out = append(out, i)
		}
	}
	return out
}

// Owner returns the index of the node that owns key under policy, as node
// live[0] sees the ring.
func (c *Cluster) Owner(policy, key string) int {
	live := c.Live()
	name := OwnerOf(c.Node(live[0]), policy, key)
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Index(c.names, name)
}

// OwnerOf returns the name of the node that owns key under policy, as n
// sees the ring (its published view, as a client reads it): n's own name
// when it has no ring.
func OwnerOf(n *cluster.Node, policy, key string) string {
	_, body := n.Ring()
	if body == nil {
		return n.Name()
	}
	var v struct {
		Members []struct{ Name string } `json:"members"`
		Owners  []int                   `json:"owners"`
	}
	if err := json.Unmarshal(body, &v); err != nil || len(v.Owners) == 0 {
		return n.Name()
	}
	enc, _ := bucket.Key{Policy: policy, ID: key}.AppendBinary(nil)
	return v.Members[v.Owners[xxhash.Sum64(enc)%uint64(len(v.Owners))]].Name
}

// take removes node i from its slot and returns it (nil if down) with its
// crash switch.
func (c *Cluster) take(i int) (*cluster.Node, *crash.Switch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, sw := c.nodes[i], c.crash[i]
	c.nodes[i], c.crash[i] = nil, nil
	return n, sw
}

// Kill stops node i at once, as a crash would: no hand-off, no leave
// message.
func (c *Cluster) Kill(i int) {
	if n, sw := c.take(i); n != nil && !sw.Pull() {
		c.t.Errorf("testcluster: node %d has no crash switch", i)
	}
}

// Leave closes node i gracefully: it hands off its counters and leaves.
func (c *Cluster) Leave(i int) {
	if n, _ := c.take(i); n != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			c.t.Errorf("testcluster: close node %d: %v", i, err)
		}
	}
}

// Restart starts node i again under its name and addresses (after Kill or
// Leave), joined through the live nodes.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	name := c.names[i]
	c.mu.Unlock()
	c.startAt(i, name)
}

// Partition cuts the peer transport between the nodes of a and b (needs
// Options.InMemory). Gossip is not cut: owners stay in the ring but cannot
// be reached, which is what failure modes are for.
func (c *Cluster) Partition(a, b []int) {
	if c.net == nil {
		c.t.Fatal("testcluster: Partition needs Options.InMemory")
	}
	c.net.Partition(c.nameList(a), c.nameList(b))
}

// Delay makes every check to or from node i take d longer (needs
// Options.InMemory); 0 removes the delay. Gossip is not delayed.
func (c *Cluster) Delay(i int, d time.Duration) {
	if c.net == nil {
		c.t.Fatal("testcluster: Delay needs Options.InMemory")
	}
	c.net.Delay(c.nameList([]int{i})[0], d)
}

// Heal undoes every Partition.
func (c *Cluster) Heal() {
	if c.net != nil {
		c.net.Heal()
	}
}

func (c *Cluster) nameList(idx []int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = c.names[j]
	}
	return out
}

// WaitConverged waits until every live node has every live node, and only
// those, in its ring and they agree on the owners of sample keys; it fails
// the test after 30 s.
func (c *Cluster) WaitConverged() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.converged()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("testcluster: not converged: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *Cluster) converged() error {
	live := c.Live()
	for _, i := range live {
		n := c.Node(i)
		if n == nil {
			return fmt.Errorf("node %d went down", i)
		}
		if st := n.Status(); st.RingMembers != len(live) || !n.Ready() {
			return fmt.Errorf("node %d: ring of %d, %d live, ready %v", i, st.RingMembers, len(live), n.Ready())
		}
	}
	// Nodes that agree on the ring publish the same version.
	var version string
	for _, i := range live {
		v, _ := c.Node(i).Ring()
		if version == "" {
			version = v
		} else if v != version {
			return fmt.Errorf("node %d: ring version %s, node %d's %s", i, v, live[0], version)
		}
	}
	return nil
}

// Leader returns the index of the raft leader, as the live nodes see it,
// waiting for one to be elected; it fails the test after 15 s.
func (c *Cluster) Leader() int {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, i := range c.Live() {
			if n := c.Node(i); n != nil {
				if st := n.Status(); st.Raft != nil && st.Raft.State == "leader" {
					return i
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("testcluster: no raft leader")
	return -1
}

// Close stops every node, at once.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, i := range c.Live() {
		wg.Go(func() { c.Kill(i) })
	}
	wg.Wait()
}
