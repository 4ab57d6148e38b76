package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/vibewell/ratelimit/cluster/raftbolt"
	"github.com/vibewell/ratelimit/internal/logadapt"
)

// RaftStatus is the raft side of a node, as it sees it.
type RaftStatus struct {
	State         string   `json:"state"`          // leader, follower, candidate, shutdown
	Leader        string   `json:"leader"`         // the leader's name, empty when there is none
	Voters        []string `json:"voters"`         // names of the voting members
	NonVoters     []string `json:"non_voters"`     // names of the members that only receive the log
	AppliedIndex  uint64   `json:"applied_index"`  // the last log index applied here
	PolicyVersion uint64   `json:"policy_version"` // the version of the policy table applied here
}

// raftNode replicates the policy table with hashicorp/raft.
type raftNode struct {
	n     *Node
	r     *raft.Raft
	trans *raft.NetworkTransport
	store io.Closer // the bbolt log store, or nil in memory
	addr  string    // advertised raft address
	kick  chan struct{}
	gone  map[string]time.Time // voter → when it was last seen gone

	applied   atomic.Uint64 // the last log index the table reflects
	appliedMu sync.Mutex
	appliedCh chan struct{} // closed and replaced on each apply
	goneMu    sync.Mutex

	// The writes waiting for raft's answer (applyLocal): close lets them
	// have it before raft stops, and takes no new ones.
	applyMu  sync.Mutex
	closing  bool // under applyMu
	awaiting atomic.Int64
}

// startRaft opens the raft transport and stores and starts raft. It runs
// before gossip, whose metadata carries the raft address; bootstrap and
// membership come after the gossip starts.
func (n *Node) startRaft() error {
	cfg := n.cfg
	bind := cfg.RaftAddr
	if bind == "" {
		host, _, _ := net.SplitHostPort(cfg.GossipAddr)
		bind = net.JoinHostPort(host, "0")
	}
	var adv net.Addr
	if cfg.RaftAdvertise != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.RaftAdvertise)
		if err != nil {
			return fmt.Errorf("cluster: RaftAdvertise: %w", err)
		}
		adv = a
	}
	// Raft's warnings and errors, in the node's log; its first election
	// is routine, at info.
	hlog := logadapt.NewHclog(n.log.With("component", "raft"), hclog.Warn, "heartbeat timeout reached, starting election")
	stream, err := newRaftStream(bind, adv, n.sec.raft, n.refusedRaft)
	if err != nil {
		return fmt.Errorf("cluster: raft transport on %s: %w", bind, err)
	}
	trans := raft.NewNetworkTransportWithLogger(stream, 3, 5*time.Second, hlog)
	rn := &raftNode{n: n, trans: trans, addr: string(trans.LocalAddr()), kick: make(chan struct{}, 1), gone: map[string]time.Time{}, appliedCh: make(chan struct{})}

	var logs raft.LogStore
	var stable raft.StableStore
	var snaps raft.SnapshotStore
	if cfg.DataDir == "" {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			trans.Close()
			return fmt.Errorf("cluster: data dir: %w", err)
		}
		bs, err := raftbolt.Open(filepath.Join(cfg.DataDir, "raft.db"), raftbolt.Options{})
		if err != nil {
			trans.Close()
			return fmt.Errorf("cluster: raft log: %w", err)
		}
		rn.store = bs
		logs, stable = bs, bs
		snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, hlog)
		if err != nil {
			bs.Close()
			trans.Close()
			return fmt.Errorf("cluster: raft snapshots: %w", err)
		}
	}
	hasState, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		rn.close()
		return fmt.Errorf("cluster: raft state: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeName)
	rc.Logger = hlog
	rc.HeartbeatTimeout = cfg.RaftTimeout
	rc.ElectionTimeout = cfg.RaftTimeout
	// Without a commit every few milliseconds, only heartbeats tell the
	// leader that followers are there: a lease of a whole timeout keeps a
	// loaded leader from stepping down for a late one.
	rc.LeaderLeaseTimeout = cfg.RaftTimeout
	// The leader also sends each follower its log every CommitTimeout:
	// short, that is hundreds of wake-ups a second on an idle cluster.
	// Followers learn of a commit at once instead, from the barrier that
	// nudgeFollowers appends after each change (see idle.go).
	rc.CommitTimeout = cfg.RaftTimeout
	if cfg.legacyCommit > 0 {
		rc.CommitTimeout = cfg.legacyCommit
	}
	rc.SnapshotThreshold = 1024
	rc.TrailingLogs = 1024
	n.raft = rn // the FSM may apply entries while NewRaft replays the log
	r, err := raft.NewRaft(rc, fsm{n}, logs, stable, snaps, trans)
	if err != nil {
		n.raft = nil
		rn.close()
		return fmt.Errorf("cluster: raft: %w", err)
	}
	rn.r = r
	others := slices.DeleteFunc(slices.Clone(cfg.Seeds), func(s string) bool {
		return s == cfg.GossipAddr || s == cfg.GossipAdvertise
	})
	if !hasState && (cfg.Bootstrap || len(others) == 0) {
		// The first node of a new cluster (Bootstrap, or no seeds but
		// itself) bootstraps it alone; every other node joins and is
		// added by the leader. So two clusters can only form if two nodes
		// are started that way.
		n.bootstrapped = true
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr()}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("cluster: raft bootstrap: %w", err)
		}
		n.log.Info("bootstrapped a new cluster")
	} else if hasState {
		n.log.Info("raft state found; keeping the policy table it holds", "data_dir", cfg.DataDir)
	}
	return nil
}

// leaderLoop seeds the table once and, while this node leads, keeps the
// raft configuration in line with the gossip membership. A follower's
// loop wakes only on membership changes and leadership changes.
func (rn *raftNode) leaderLoop() {
	defer rn.n.wg.Done()
	tick := time.NewTicker(rn.n.cfg.RaftTimeout / 2)
	defer tick.Stop()
	leaderCh := rn.r.LeaderCh()
	settled := false
	for {
		// The ticker retries what is not done yet (a seed or a change
		// that failed, a voter within its grace); once the table is seeded
		// and raft's members are gossip's, only a membership or
		// leadership change wakes the loop.
		var ticks <-chan time.Time
		if rn.r.State() == raft.Leader && !settled {
			ticks = tick.C
		}
		select {
		case <-rn.n.stop:
			return
		case <-ticks:
		case <-rn.kick:
		case <-leaderCh:
		}
		if rn.r.State() != raft.Leader {
			settled = false
			continue
		}
		seeded := rn.seed()
		settled = rn.reconcile() && seeded
	}
}

// seed fills an unseeded table with the leader's configured policies, and
// reports whether the table is seeded.
func (rn *raftNode) seed() bool {
	rn.n.stateMu.Lock()
	seeded := rn.n.state.Seeded
	rn.n.stateMu.Unlock()
	if seeded {
		return true
	}
	c := command{Op: opSeed, Policies: rn.n.cfg.Policies}
	data, err := rn.n.checkProposal(c)
	if err != nil {
		rn.n.warnings.Log("the configured policies cannot seed the table", "err", err)
		return false
	}
	if err := rn.r.Apply(data, 5*time.Second).Error(); err != nil {
		rn.n.log.Warn("seeding the policy table failed; retrying", "err", err)
		return false
	}
	rn.nudgeFollowers()
	rn.n.log.Info("policy table seeded from the configuration", "policies", len(rn.n.cfg.Policies))
	return true
}

// reconcile adds gossip members to raft (as voters up to Voters, else as
// non-voters), removes members that left, and replaces voters gone for
// longer than VoterGrace by promoting non-voters. It reports whether
// nothing is left to retry: every change it tried was made, and no voter
// is within its grace.
func (rn *raftNode) reconcile() (settled bool) {
	cf := rn.r.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	settled = true
	try := func(what, id string, f raft.IndexFuture) bool {
		ok := rn.apply(what, id, f)
		settled = settled && ok
		return ok
	}
	servers := cf.Configuration().Servers
	alive, left := rn.n.gossip.raftMembers()
	self := rn.n.cfg.NodeName
	now := time.Now()
	in := map[string]raft.Server{}
	voters := 0
	for _, s := range servers {
		in[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	rn.goneMu.Lock()
	defer rn.goneMu.Unlock()
	for id, s := range in {
		if id == self {
			continue
		}
		if addr, ok := alive[id]; ok {
			delete(rn.gone, id)
			if string(s.Address) != addr {
				// Restarted at a new address: re-add under the same id.
				try("re-address", id, rn.r.AddNonvoter(s.ID, raft.ServerAddress(addr), 0, time.Second))
				settled = false // promoted again on the next pass
			}
			continue
		}
		since, seen := rn.gone[id]
		if !seen {
			rn.gone[id] = now
			since = now
		}
		if left[id] || s.Suffrage != raft.Voter || now.Sub(since) >= rn.n.cfg.VoterGrace {
			if try("remove", id, rn.r.RemoveServer(s.ID, 0, time.Second)) && s.Suffrage == raft.Voter {
				voters--
			}
			delete(rn.gone, id)
			continue
		}
		settled = false // a voter within its grace: look again
	}
	names := make([]string, 0, len(alive))
	for id := range alive {
		names = append(names, id)
	}
	slices.Sort(names)
	for _, id := range names {
		if _, ok := in[id]; ok || id == self {
			continue
		}
		if voters < rn.n.cfg.Voters {
			if try("add voter", id, rn.r.AddVoter(raft.ServerID(id), raft.ServerAddress(alive[id]), 0, time.Second)) {
				voters++
			}
			continue
		}
		if try("add non-voter", id, rn.r.AddNonvoter(raft.ServerID(id), raft.ServerAddress(alive[id]), 0, time.Second)) {
			in[id] = raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(alive[id]), Suffrage: raft.Nonvoter}
		}
	}
	// Promote live non-voters, in name order, while voters are short.
	for _, id := range names {
		if voters >= rn.n.cfg.Voters {
			break
		}
		if s, ok := in[id]; ok && s.Suffrage != raft.Voter {
			if try("promote", id, rn.r.AddVoter(s.ID, s.Address, 0, time.Second)) {
				voters++
			}
		}
	}
	return settled
}

func (rn *raftNode) apply(what, id string, f raft.IndexFuture) bool {
	if err := f.Error(); err != nil {
		rn.n.log.Warn("raft membership change failed", "change", what, "server", id, "err", err)
		return false
	}
	rn.n.log.Info("raft membership change", "change", what, "server", id)
	return true
}

// propose commits c through the leader, forwarding it when this node does
// not lead, and returns once this node has applied it. Leader changes are
// retried until ctx's deadline (10 s when it has none).
func (rn *raftNode) propose(ctx context.Context, c command) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	data, err := rn.n.checkProposal(c)
	if err != nil {
		return err
	}
	var last error
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		index, err := rn.submit(ctx, data)
		if err == nil {
			return rn.waitApplied(ctx, index)
		}
		if !retryable(err) {
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w (last: %v)", ErrNoLeader, ctx.Err(), last)
		case <-time.After(wait):
		}
	}
}

// submit applies data on the leader: here, or forwarded over the peer
// transport. It returns the entry's log index.
func (rn *raftNode) submit(ctx context.Context, data []byte) (uint64, error) {
	if rn.r.State() == raft.Leader {
		return rn.applyLocal(ctx, data)
	}
	_, id := rn.r.LeaderWithID()
	if id == "" {
		return 0, errNotLeader
	}
	addr := rn.n.gossip.peerAddr(string(id))
	if addr == "" {
		return 0, errNotLeader
	}
	body, err := rn.n.tr.Call(ctx, addr, methodPolicyApply, data)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errNotLeader, err)
	}
	var res applyResult
	if err := json.Unmarshal(body, &res); err != nil {
		return 0, fmt.Errorf("cluster: policy change answer: %w", err)
	}
	return res.Index, res.err()
}

// applyLocal applies data on this node, the leader, once it is a valid
// command that applies to the current table: what reaches raft.Apply has
// been checked here, whoever sent it.
func (rn *raftNode) applyLocal(ctx context.Context, data []byte) (uint64, error) {
	if err := rn.n.checkEntry(data); err != nil {
		return 0, err
	}
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	rn.applyMu.Lock()
	if rn.closing {
		rn.applyMu.Unlock()
		return 0, ErrClosed
	}
	f := rn.r.Apply(data, timeout)
	rn.awaiting.Add(1)
	rn.applyMu.Unlock()
	// raft answers every future, except one whose entry it committed
	// while shutting down (its state machine stops without it); close
	// waits for these answers before it stops raft, so this goroutine
	// ends. The caller waits only as long as its ctx and the node last.
	done := make(chan error, 1)
	go func() {
		defer rn.awaiting.Add(-1)
		done <- f.Error()
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-rn.n.stop:
		return 0, ErrClosed
	}
	if err == nil {
		rn.nudgeFollowers()
	}
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrEnqueueTimeout) {
			return 0, fmt.Errorf("%w: %w", errNotLeader, err)
		}
		return 0, err
	}
	if err, ok := f.Response().(error); ok {
		return f.Index(), err
	}
	return f.Index(), nil
}

// waitApplied waits until this node's table reflects the log up to index,
// so that a change is visible here when the call returns.
func (rn *raftNode) waitApplied(ctx context.Context, index uint64) error {
	for {
		rn.appliedMu.Lock()
		ch := rn.appliedCh
		rn.appliedMu.Unlock()
		if rn.applied.Load() >= index {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: change committed at index %d but not yet applied here: %w", index, ctx.Err())
		case <-ch:
		}
	}
}

// markApplied records that the table reflects the log up to index and
// wakes the writers waiting for it.
func (rn *raftNode) markApplied(index uint64) {
	rn.applied.Store(index)
	rn.appliedMu.Lock()
	close(rn.appliedCh)
	rn.appliedCh = make(chan struct{})
	rn.appliedMu.Unlock()
}

// errNotLeader marks errors worth a retry: no leader, or it moved.
var errNotLeader = errors.New("cluster: not the raft leader")

func retryable(err error) bool { return errors.Is(err, errNotLeader) }

// methodPolicyApply forwards a policy change to the leader.
const methodPolicyApply = "policy.apply"

// applyResult is the leader's answer to a forwarded change.
type applyResult struct {
	Index uint64 `json:"index"`
	Kind  string `json:"kind,omitempty"` // "", "not_leader", "invalid", "unknown_policy", "unknown_override", "other"
	Error string `json:"error,omitempty"`
}

func (a applyResult) err() error {
	switch a.Kind {
	case "":
		return nil
	case "not_leader":
		return fmt.Errorf("%w: %s", errNotLeader, a.Error)
	case "invalid":
		return fmt.Errorf("%w: %s", ErrInvalidPolicyChange, a.Error)
	case "unknown_policy":
		return fmt.Errorf("%w: %s", ErrUnknownPolicy, a.Error)
	case "unknown_override":
		return fmt.Errorf("%w: %s", ErrUnknownOverride, a.Error)
	case "in_use":
		return fmt.Errorf("%w: %s", ErrPolicyInUse, a.Error)
	}
	return errors.New(a.Error)
}

// handlePolicyApply serves a change forwarded by a peer.
func (rn *raftNode) handlePolicyApply(ctx context.Context, data []byte) ([]byte, error) {
	index, err := rn.applyLocal(ctx, data)
	res := applyResult{Index: index}
	if err != nil {
		res.Error = err.Error()
		switch {
		case errors.Is(err, errNotLeader):
			res.Kind = "not_leader"
		case errors.Is(err, ErrUnknownPolicy):
			res.Kind = "unknown_policy"
		case errors.Is(err, ErrUnknownOverride):
			res.Kind = "unknown_override"
		case errors.Is(err, ErrPolicyInUse):
			res.Kind = "in_use"
		case errors.Is(err, errInvalidPolicy):
			res.Kind = "invalid"
		default:
			res.Kind = "other"
		}
	}
	return json.Marshal(res)
}

// status reports the raft side of the node.
func (rn *raftNode) status() *RaftStatus {
	st := &RaftStatus{State: strings.ToLower(rn.r.State().String()), AppliedIndex: rn.r.AppliedIndex()}
	_, id := rn.r.LeaderWithID()
	st.Leader = string(id)
	if cf := rn.r.GetConfiguration(); cf.Error() == nil {
		for _, s := range cf.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				st.Voters = append(st.Voters, string(s.ID))
			} else {
				st.NonVoters = append(st.NonVoters, string(s.ID))
			}
		}
	}
	slices.Sort(st.Voters)
	slices.Sort(st.NonVoters)
	rn.n.stateMu.Lock()
	st.PolicyVersion = rn.n.state.Version
	rn.n.stateMu.Unlock()
	return st
}

// leave steps down and removes this node from the raft configuration, so
// a graceful leave does not cost the cluster a voter.
func (rn *raftNode) leave() {
	if rn.r.State() == raft.Leader && rn.otherVoters() {
		if err := rn.r.LeadershipTransfer().Error(); err != nil {
			rn.n.log.Warn("raft leadership transfer failed", "err", err)
		}
	}
}

// otherVoters reports whether raft's configuration has a voter besides
// this node, which could take over its leadership.
func (rn *raftNode) otherVoters() bool {
	f := rn.r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != rn.n.cfg.NodeName {
			return true
		}
	}
	return false
}

func (rn *raftNode) close() {
	rn.applyMu.Lock()
	rn.closing = true
	rn.applyMu.Unlock()
	if rn.r != nil {
		// Raft answers the writes it has taken while it runs: each is
		// applied, or fails as leadership is lost (within a raft timeout
		// when the quorum is gone). The bound is for a raft that does
		// neither.
		deadline := time.Now().Add(3 * rn.n.cfg.RaftTimeout)
		for rn.awaiting.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if k := rn.awaiting.Load(); k > 0 {
			rn.n.log.Warn("raft stopped with policy changes unanswered", "changes", k)
		}
		if err := rn.r.Shutdown().Error(); err != nil {
			rn.n.log.Warn("raft shutdown", "err", err)
		}
	}
	// Close the pooled connections too, so that peers' connection
	// handlers end now rather than on their next read.
	rn.trans.CloseStreams()
	rn.trans.Close()
	if rn.store != nil {
		rn.store.Close()
	}
}

// fsm is the raft state machine: the node's policy table.
type fsm struct{ n *Node }

// Apply applies one committed change. An entry that is malformed, invalid
// or does not apply to the table is refused, counted and logged, and the
// table stays as it was: the leader checks every command before it enters
// the log, but the log may hold what an older or a rogue leader wrote.
func (f fsm) Apply(l *raft.Log) any {
	defer f.n.raft.markApplied(l.Index)
	c, err := f.n.decodeEntry(l.Data)
	if err == nil {
		_, err = f.n.applyCommand(c)
	}
	if err != nil {
		f.n.refuseCommand("applying", l.Index, err)
		return err
	}
	return nil
}

// Snapshot captures the table; states are immutable, so it is a pointer.
func (f fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.n.stateMu.Lock()
	defer f.n.stateMu.Unlock()
	return snapshot{f.n.state}, nil
}

// Restore replaces the table with a snapshot's.
func (f fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var st policyState
	if err := json.NewDecoder(rc).Decode(&st); err != nil {
		return fmt.Errorf("cluster: policy snapshot: %w", err)
	}
	f.n.stateMu.Lock()
	defer f.n.stateMu.Unlock()
	f.n.setStateLocked(&st)
	if rn := f.n.raft; rn != nil && rn.r != nil {
		rn.markApplied(rn.r.AppliedIndex())
	}
	return nil
}

type snapshot struct{ st *policyState }

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.st); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (snapshot) Release() {}
