package cluster

import (
	"context"
	"crypto/tls"
	"time"

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
