package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/internal/crash"
	"github.com/vibewell/ratelimit/internal/logcap"
	"github.com/vibewell/ratelimit/transport"
)

// Decision is the answer to a check; see bucket.Decision.
type Decision = bucket.Decision

// Node is one member of a rate-limiting cluster. It is safe for concurrent
// use.
type Node struct {
	cfg      Config
	log      *slog.Logger
	store    bucket.Store
	local    *bucket.MemoryStore // counters of the local failure mode
	replicas *bucket.MemoryStore // copies of the counters of the keys whose successor this node is; or nil
	repl     *replicator         // the rounds of copies; nil without copies
	copyMu   sync.RWMutex        // checks decided on a copy (read) against its promotion
	taken    *takenHits          // hits admitted on copies, to fold back
	ho       handovers           // keys changing owner (handover.go)
	// ownTransport: the node made its TCP transport, whose call timeout
	// is FailoverTimeout.
	ownTransport bool
	clock        bucket.Clock
	policies     atomic.Pointer[policyTable]
	metrics      *metrics
	denials      *logcap.Logger
	denied       deniedKeys // the most denied keys, by policy (TopDenied)
	denyCache    *denyCache // owners' denials of forwarded checks; or nil
	leases       *leases    // leases of hot keys' allowance (lease.go); or nil
	warnings     *logcap.Logger

	// Cluster side; tr and gossip are nil for a standalone node.
	sec    secrets // credentials of the cluster ports (secret.go)
	guard  *guard  // counts and logs what the cluster ports refuse
	tr     transport.Transport
	gossip *gossip
	raft   *raftNode // nil for a standalone node
	// peerErrs counts the requests to peers that failed (peererrors.go).
	peerErrs *peerErrors

	stateMu     sync.Mutex
	state       *policyState // the replicated table; checks read policies
	tableLogged bool         // logTableDiff ran; under stateMu
	route       atomic.Pointer[routeTable]
	ringPub     ringPublished                // the published view of route (ringview.go)
	without     atomic.Pointer[ringsWithout] // rings without one member, for checking what peers send
	leaving     atomic.Bool
	// bootstrapped: this start made a new raft cluster (raft.go); the node
	// is joined to it at once, whatever its seeds.
	bootstrapped bool
	// partitioned is true when each node keeps its own counters (the
	// memory store) and checks go to the key's owner; a store shared by all
	// nodes (Redis) is asked directly.
	partitioned bool

	closed atomic.Bool
	// life is the node's lifetime: background work (hand-off, copies,
	// joins, forwards waiting on a member) runs under it, and Close ends
	// it. stop is its Done channel.
	life    context.Context
	endLife context.CancelFunc
	stop    <-chan struct{}
	halted  chan struct{} // closed once background work has ended after Close (or halt)
	wg      sync.WaitGroup
}

// Start validates cfg, starts a node and returns it ready for checks. With
// Seeds, it joins the cluster before it returns if a seed answers, and
// keeps trying in the background otherwise (Ready tells).
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// A key kept in DataDir counts for Validate; a new one is made (and
	// written there) only for a valid config.
	if _, err := cfg.resolveClusterKey(false); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	generated, err := cfg.resolveClusterKey(true)
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("cluster: metrics: %w", err)
	}
	table, err := newPolicyTable(cfg.Policies, cfg.Shadow, m)
	if err != nil {
		m.unregister()
		return nil, fmt.Errorf("cluster: config: Policies: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = newMonoClock()
	}
	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.NodeName),
		store:   cfg.Store,
		local:   bucket.NewMemoryStore(bucket.MemoryConfig{Shards: 16}),
		clock:   cfg.Clock,
		metrics: m,
		halted:  make(chan struct{}),
		taken:   newTakenHits(),
		sec:     cfg.secrets(time.Now),
		guard:   newGuard(cfg.Logger.With("node", cfg.NodeName)),
	}
	n.life, n.endLife = context.WithCancel(context.Background())
	n.stop = n.life.Done()
	n.peerErrs = newPeerErrors()
	if cfg.Metrics != nil && cfg.GossipAddr != "" {
		if err := cfg.Metrics.Register(n.guard); err != nil {
			n.endLife()
			m.unregister()
			return nil, fmt.Errorf("cluster: metrics: %w", err)
		}
		m.cols = append(m.cols, n.guard)
		if err := n.peerErrs.register(cfg.Metrics, m); err != nil {
			m.unregister()
			return nil, fmt.Errorf("cluster: metrics: %w", err)
		}
	}
	n.sec.generated = generated
	_, canHandOff := cfg.Store.(handoffStore)
	n.partitioned = canHandOff && !cfg.SharedStore
	n.denials, n.warnings = n.newEventLogs()
	n.denyCache = newDenyCache(cfg.DenyCacheKeys, 0)
	n.denyCache.register(m)
	if cfg.GossipAddr != "" {
		n.leases = newLeases(cfg.LeaseMinLimit)
		n.leases.register(m)
	}
	n.policies.Store(&table)
	n.state = &policyState{Policies: map[string]bucket.Policy{}}
	if cfg.GossipAddr == "" {
		// A standalone node's table is its configuration, changed locally.
		for _, p := range cfg.Policies {
			n.state.Policies[p.Name] = p.Clone()
		}
		n.state.Seeded = true
	}
	if cfg.GossipAddr != "" {
		if err := n.startCluster(ctx); err != nil {
			n.closed.Store(true)
			n.shutdown()
			n.wg.Wait()
			m.unregister()
			return nil, err
		}
	}
	n.wg.Add(1)
	go n.sweepLoop()
	n.watchStores()
	crash.Arm(ctx, func() { _ = n.halt(context.Background()) })
	n.log.Info("node started", "policies", len(table), "shadow", cfg.Shadow, "gossip", n.Addrs().Gossip, "peer", n.Addrs().Peer)
	return n, nil
}

// startCluster opens the peer transport and joins the gossip.
func (n *Node) startCluster(ctx context.Context) error {
	cfg := n.cfg
	if ct, ok := n.store.(changeTracker); ok && ct.Tracking() && cfg.ReplicaInterval > 0 {
		n.replicas = bucket.NewMemoryStore(bucket.MemoryConfig{MaxKeys: cfg.MaxKeys})
		n.repl = newReplicator()
	} else if n.partitioned && cfg.ReplicaInterval > 0 {
		n.log.Warn("counter copies off: the store does not track changed counters (bucket.MemoryConfig.TrackChanges); a crash of this node resets its counters")
	}
	if cfg.Insecure {
		n.log.Warn("INSECURE CLUSTER: gossip, peer and raft traffic is neither authenticated nor encrypted; any process that reaches the loopback ports can rewrite policies and counters (Insecure, --insecure-cluster)")
	}
	n.tr = cfg.Transport
	if n.tr == nil {
		addr := cfg.PeerAddr
		if addr == "" {
			host, _, _ := net.SplitHostPort(cfg.GossipAddr)
			addr = net.JoinHostPort(host, "0")
		}
		tcp, err := transport.NewTCP(transport.TCPConfig{
			Addr:        addr,
			Advertise:   cfg.PeerAdvertise,
			TLS:         n.sec.peer,
			CallTimeout: cfg.FailoverTimeout,
			Logger:      n.log.With("component", "transport"),
		})
		if err != nil {
			return fmt.Errorf("cluster: peer transport: %w", err)
		}
		n.tr = tcp
		n.ownTransport = true
	}
	n.guard.watch(n.tr)
	n.tr = n.peerErrs.wrap(n.tr)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.tr.Serve(peerHandler{n}); err != nil && !errors.Is(err, transport.ErrClosed) {
			n.log.Error("peer transport stopped", "err", err)
		}
	}()
	if err := n.startRaft(); err != nil {
		return err
	}
	if err := n.startGossip(ctx); err != nil {
		return err
	}
	n.wg.Add(1)
	go n.raft.leaderLoop()
	if n.leases != nil {
		n.wg.Add(1)
		go n.leaseLoop()
	}
	if ct, ok := n.store.(changeTracker); ok && n.replicas != nil {
		n.wg.Add(2)
		go n.replicaLoop(ct)
		go n.foldBackLoop()
	}
	return nil
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.NodeName }

// Addrs are the addresses a node serves on, as its peers reach them
// (with the real ports). Every field is empty for a standalone node.
type Addrs struct {
	Gossip string // where peers gossip with it
	Peer   string // where peers forward checks to it
	Raft   string // where raft peers dial it
}

// Addrs returns the addresses the node serves on.
func (n *Node) Addrs() Addrs {
	var a Addrs
	if n.gossip != nil && n.gossip.ml != nil {
		a.Gossip = n.gossip.localAddr()
	}
	if n.tr != nil {
		a.Peer = n.tr.Addr()
	}
	if n.raft != nil {
		a.Raft = n.raft.addr
	}
	return a
}

// Allow checks hits against the counter of key under the named policy and
// returns the decision. The node that owns the key decides: this one, or a
// peer the check is forwarded to. Over the limit is Allowed == false with
// a nil error; errors are ErrUnknownPolicy, ErrInvalidKey, ErrInvalidHits,
// ErrClosed, or ctx's error. When the owner (or the store's backend)
// cannot answer, the policy's failure mode decides. hits == 0 peeks
// without consuming.
func (n *Node) Allow(ctx context.Context, policy, key string, hits int64) (Decision, error) {
	if n.closed.Load() {
		return Decision{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, err
	}
	p, err := n.checkInput(*n.policies.Load(), policy, key, hits)
	if err != nil {
		return Decision{}, err
	}
	if n.gossip != nil {
		// Counted, so that Close lets it finish before the transport
		// closes (an answer cut there is a check decided twice).
		n.ho.inflight.Add(1)
		defer n.ho.inflight.Add(-1)
		if n.ho.draining.Load() {
			return Decision{}, ErrClosed
		}
	}
	now := n.clock.Now()
	if rt := n.route.Load(); rt != nil && rt.minority {
		d, err := n.fallback(ctx, p, key, hits, now, rt.known, rt.minorityErr())
		return n.finish(p, key, hits, d, now, err)
	}
	d, err := n.decide(ctx, p, key, hits, now)
	return n.finish(p, key, hits, d, now, err)
}

// checkInput finds the policy of a check in table and checks its key and
// hits.
func (n *Node) checkInput(table policyTable, policy, key string, hits int64) (*policyEntry, error) {
	p := table[policy]
	switch {
	case p == nil:
		return nil, fmt.Errorf("%w: %q", ErrUnknownPolicy, policy)
	case len(key) == 0 || len(key) > n.cfg.MaxKeyLen:
		return nil, fmt.Errorf("%w: length %d, want 1 to %d bytes", ErrInvalidKey, len(key), n.cfg.MaxKeyLen)
	case hits < 0 || hits > n.cfg.MaxHits:
		return nil, fmt.Errorf("%w: %d, want 0 to %d", ErrInvalidHits, hits, n.cfg.MaxHits)
	}
	return p, nil
}

// finish applies shadow mode, counts and logs a decision.
func (n *Node) finish(p *policyEntry, key string, hits int64, d Decision, now time.Time, err error) (Decision, error) {
	if err != nil {
		return Decision{}, err
	}
	d = d.ApplyShadow(&p.Policy)
	p.counters.record(d)
	n.recordDenied(p, key, d, now)
	if n.cfg.LogDenials && (!d.Allowed || d.Shadowed) {
		n.logDenied(p.Name, key, hits, d)
	}
	return d, nil
}

// liveNodes returns the number of nodes the `local` share divides a
// limit by: the members in the ring and those that failed and are still
// tried (1 standalone), so that a node that lost sight of the others does
// not take a larger share for it.
func (n *Node) liveNodes() int {
	if rt := n.route.Load(); rt != nil {
		return max(1, rt.ring.Len(), rt.known)
	}
	return 1
}

// Policy returns the named policy. It is cheap enough for every check; its
// Overrides map is shared with the node and must not be modified.
func (n *Node) Policy(name string) (bucket.Policy, bool) {
	p := (*n.policies.Load())[name]
	if p == nil {
		return bucket.Policy{}, false
	}
	return p.Policy, true
}

// Policies returns the policy table, sorted by name.
func (n *Node) Policies() []bucket.Policy {
	t := *n.policies.Load()
	ps := make([]bucket.Policy, 0, len(t))
	for _, p := range t {
		ps = append(ps, p.Policy.Clone())
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	return ps
}

// owner returns the name of the node that owns key under policy, as this
// node sees the ring.
func (n *Node) owner(policy, key string) string {
	rt := n.route.Load()
	if rt == nil {
		return n.cfg.NodeName
	}
	owner, _ := rt.owner(bucket.Key{Policy: policy, ID: key})
	return owner
}

// Status is what a node knows of its cluster: its members and, in a
// cluster, raft's view.
type Status struct {
	Node    string      `json:"node"`           // this node's name
	Members []Member    `json:"members"`        // every member it knows, itself included
	Raft    *RaftStatus `json:"raft,omitempty"` // nil on a node without raft
	// RingMembers is the number of nodes in this node's ownership ring:
	// when every node reports the cluster's size, they agree on owners.
	RingMembers int `json:"ring_members"`
	// PolicyVersion counts the changes applied to the policy table.
	PolicyVersion uint64 `json:"policy_version"`
	// ReplicaCounters is the number of counter copies this node keeps for
	// the keys it would take over if their owner failed.
	ReplicaCounters int `json:"replica_counters"`
	// Counts are this node's event counters since it started (those of
	// its metrics); Overview sums them over the cluster.
	Counts Counts `json:"counts"`
}

// Status returns the node's view of its cluster.
func (n *Node) Status() Status {
	st := Status{Node: n.cfg.NodeName, Members: n.members(), RingMembers: 1, Counts: n.counts()}
	if rt := n.route.Load(); rt != nil {
		st.RingMembers = rt.ring.Len()
	}
	if n.raft != nil && !n.closed.Load() {
		st.Raft = n.raft.status()
	}
	n.stateMu.Lock()
	st.PolicyVersion = n.state.Version
	n.stateMu.Unlock()
	if n.replicas != nil {
		st.ReplicaCounters = n.replicas.Len()
	}
	return st
}

// members lists the cluster's members as this node sees them: only itself
// for a standalone node.
func (n *Node) members() []Member {
	if n.gossip == nil {
		return []Member{{Name: n.cfg.NodeName, HTTPAddr: n.cfg.HTTPAddr, State: "alive", Self: true}}
	}
	return n.gossip.members()
}

// Ready reports whether the node takes checks: started, joined to its
// cluster (when it has seeds), and neither leaving nor closed.
func (n *Node) Ready() bool {
	if n.closed.Load() || n.leaving.Load() {
		return false
	}
	return n.gossip == nil || n.gossip.isJoined()
}

// sweep drops idle counters now and returns how many; the node does this
// every Config.SweepInterval.
func (n *Node) sweep() int {
	now := n.clock.Now()
	n.local.Sweep(now)
	if n.replicas != nil {
		n.replicas.Sweep(now)
	}
	return n.store.Sweep(now)
}

func (n *Node) sweepLoop() {
	n.every(n.cfg.SweepInterval, func() {
		if dropped := n.sweep(); dropped > 0 {
			n.log.Debug("swept idle counters", "dropped", dropped)
		}
		n.denials.Flush()
		n.warnings.Flush()
	})
}

// every runs fn every d until the node stops, then marks its goroutine
// done (the caller did n.wg.Add).
func (n *Node) every(d time.Duration, fn func()) {
	defer n.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			fn()
		}
	}
}

// Leave hands this node's counters to the nodes that take over its keys,
// then leaves the cluster, so that peers see a departure, not a crash.
// Checks keep working during Leave: from its start, this node forwards
// them to the new owners. Close calls Leave.
func (n *Node) Leave(ctx context.Context) error {
	if n.gossip == nil || n.closed.Load() || !n.leaving.CompareAndSwap(false, true) {
		return nil
	}
	n.log.Info("leaving the cluster")
	n.returnLeases(ctx, true)
	if n.raft != nil {
		n.raft.leave()
	}
	// Copy the counters to their next owners while still deciding here
	// (they decide none of them before the hand-over message), then
	// switch: send them what changed meanwhile and the hand-over message,
	// and forward checks to them from then on. The switch waits for a
	// ring rebuild in progress (membership flaps under load) and keeps the
	// next one out until its hand-over has run; the members are read
	// again, as they may have changed during the copy.
	n.handOff(ctx, n.gossip.routes(), false)
	n.gossip.switching.Lock()
	next := n.gossip.routes()
	n.prepareRoute(n.route.Load(), next)
	n.promoteReplicas(next)
	n.ho.notify()
	sent := n.handOver(ctx, next, false)
	n.gossip.switching.Unlock()
	timeout := 2 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := n.gossip.announceLeave(max(timeout/2, time.Millisecond)); err != nil {
		n.log.Warn("announcing the leave failed; leaving anyway", "err", err)
	}
	if err := n.gossip.ml.Leave(max(timeout/2, time.Millisecond)); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	n.log.Info("left the cluster", "counters_handed_off", sent)
	return nil
}

// Close leaves the cluster (see Leave), stops the node and releases its
// listeners. Checks after Close return ErrClosed. It waits for background
// work to end, or for ctx; the node's metrics are unregistered either way.
// A second Close waits the same way.
func (n *Node) Close(ctx context.Context) error {
	if !n.closed.Load() {
		if err := n.Leave(ctx); err != nil {
			n.log.Warn("leave failed", "err", err)
		}
		// Peers send nothing here after the hand-over; let the answers
		// to what they sent before, and this node's own checks, finish
		// before the connections close.
		n.ho.draining.Store(true)
		drain := handoverWait + time.Second
		if dl, ok := ctx.Deadline(); ok {
			drain = min(drain, time.Until(dl))
		}
		n.drainPeers(drain)
	}
	return n.halt(ctx)
}

// halt stops the node at once, as a crash would: no hand-off, no leave
// message; peers find out by failure detection. Close ends with it; tests
// of failure handling reach it through internal/crash.
func (n *Node) halt(ctx context.Context) error {
	if n.closed.CompareAndSwap(false, true) {
		n.shutdown()
		// At once, not after the wait: a caller whose ctx expires can
		// still register another node on the same registry.
		n.metrics.unregister()
		go func() {
			n.wg.Wait()
			n.denials.Flush()
			n.warnings.Flush()
			n.log.Info("node closed")
			close(n.halted)
		}()
	}
	select {
	case <-n.halted:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// shutdown stops background work and closes listeners.
func (n *Node) shutdown() {
	n.endLife()
	if n.gossip != nil && n.gossip.ml != nil {
		n.gossip.ml.Shutdown()
	}
	if n.raft != nil {
		n.raft.close()
	}
	if n.tr != nil {
		n.tr.Close()
	}
}
