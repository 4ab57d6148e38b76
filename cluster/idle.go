package cluster

// An idle cluster stays idle: every background loop of a node either runs
// rarely or sleeps until there is work. On a virtual machine each wake-up
// of a Go process costs a few hundred microseconds of CPU (the scheduler
// and sysmon wake with it), so what counts is how often a loop wakes, not
// what it does. docs/architecture.md lists each loop and its cost.

// nudgeFollowers makes the followers apply what the leader just committed.
// hashicorp/raft tells a follower the commit index only with the next
// entries it sends, or after CommitTimeout (which is long, so that an idle
// leader sleeps): a barrier entry is such a next entry, sent at once. The
// barrier's own commit reaches followers later, which changes nothing, as
// it carries no change.
func (rn *raftNode) nudgeFollowers() {
	if rn.n.cfg.legacyCommit > 0 {
		return
	}
	// Not waited for: raft answers the future into a buffered channel.
	rn.r.Barrier(rn.n.cfg.RaftTimeout)
}
