package cluster

import (
	"context"
	"crypto/tls"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Hooks for the security tests of package cluster_test, which play a
// stranger: a node with another cluster key has the same code, not the
// same key.

// StrangerTLS returns the peer (raft == false) or raft TLS configuration
// of a node named name holding key.
func StrangerTLS(key []byte, name string, raft bool) *tls.Config {
	purpose := purposePeer
	if raft {
		purpose = purposeRaft
	}
	return keyTLS(key, purpose, name, time.Now)
}

// StrangerRaftStream returns a raft stream layer on a free loopback port
// that dials with config (nil: plain TCP).
func StrangerRaftStream(config *tls.Config) (raft.StreamLayer, error) {
	return newRaftStream("127.0.0.1:0", nil, config, func(string, string, error) {})
}

// Refused returns how many refusals of (port, reason) the node counted.
func (n *Node) Refused(port, reason string) uint64 { return n.guard.count(port, reason) }

// ApplyEntry hands data to n's state machine as a committed log entry, as
// a leader that skipped the checks of applyLocal would: the state machine
// must refuse it on its own.
func (n *Node) ApplyEntry(data []byte) error {
	last := n.raft.r.AppliedIndex()
	if err, ok := (fsm{n}).Apply(&raft.Log{Index: last, Data: data}).(error); ok {
		return err
	}
	return nil
}

// SetLegacyRaftCommit gives cfg raft's former timing: CommitTimeout d and
// no barrier after each change (benchmarks compare against it).
func SetLegacyRaftCommit(cfg *Config, d time.Duration) { cfg.legacyCommit = d }

// Test hooks on the node, outside the public API.

// Halt stops n at once, as a crash would (internal/crash does it for
// internal/testcluster).
func (n *Node) Halt() { _ = n.halt(context.Background()) }

// Owner returns the name of the node that owns key under policy, as n sees
// the ring.
func (n *Node) Owner(policy, key string) string { return n.owner(policy, key) }

// Sweep drops idle counters now and returns how many.
func (n *Node) Sweep() int { return n.sweep() }

// ReplicasSent returns the counter copies n has sent to successors.
func (n *Node) ReplicasSent() uint64 { return n.counts().ReplicaSent }

// CopiesFailing returns how many successors the last round of copies
// did not reach.
func (n *Node) CopiesFailing() int {
	if n.repl == nil {
		return 0
	}
	return int(n.repl.nfailing.Load())
}

// Flap makes n see member taken for dead and back at once, as
// memberlist's failure detection does on a starved machine. With wait, it
// then waits (up to 10 s) until n's ring has been rebuilt with member back
// in it and its hand-over has run, and reports whether it was; else it
// reports whether n knew member.
func (n *Node) Flap(member string, wait bool) bool {
	g := n.gossip
	var m *memberlist.Node
	for _, x := range g.ml.Members() {
		if x.Name == member {
			m = x
		}
	}
	if m == nil {
		return false
	}
	before := n.route.Load()
	dead := *m
	dead.State = memberlist.StateDead
	g.update(&dead, false)
	g.update(m, true)
	if !wait {
		return true
	}
	g.mu.Lock()
	epoch := g.epoch[member]
	g.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		rt := n.route.Load()
		if rt != before && rt.ring.Has(member) && rt.epochs[member] == epoch && (rt.hand == nil || rt.hand.finished.Load()) {
			return true
		}
	}
	return false
}

// SeeDead makes n alone take member for dead, as memberlist's failure
// detection on a starved machine can before the member refutes it, and
// waits (up to 10 s) until n's ring has been rebuilt without member and
// its hand-over has run. It reports whether it was; false also when n did
// not know member.
func (n *Node) SeeDead(member string) bool {
	g := n.gossip
	var dead *memberlist.Node
	for _, x := range g.ml.Members() {
		if x.Name == member {
			m := *x
			m.State = memberlist.StateDead
			dead = &m
		}
	}
	if dead == nil {
		return false
	}
	g.update(dead, false)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		rt := n.route.Load()
		if !rt.ring.Has(member) && (rt.hand == nil || rt.hand.finished.Load()) {
			return true
		}
	}
	return false
}

// PauseRebuild makes n's next ring rebuild stop once it has read the
// members: paused is closed then, release lets it go on, and rebuilt is
// closed once it has ended. Later rebuilds wait at their start until
// resume.
func (n *Node) PauseRebuild() (paused, rebuilt <-chan struct{}, release, resume func()) {
	p, rel, done, res := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	var relOnce, resOnce sync.Once
	h := func(s rebuildStage) {
		switch {
		case s == rebuildStart && first.Load():
			<-res
		case s == rebuildRead && first.CompareAndSwap(false, true):
			close(p)
			<-rel
		case s == rebuildDone && first.Load():
			select {
			case <-done:
			default:
				close(done)
			}
		}
	}
	n.gossip.hook.Store(&h)
	return p, done, func() { relOnce.Do(func() { close(rel) }) }, func() { resOnce.Do(func() { close(res) }) }
}
