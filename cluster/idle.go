package cluster

import (
	"sync/atomic"
	"time"
)

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

// wakeGate lets a periodic loop sleep while it finds nothing to do, and
// wakes it when work may have come. poke is one atomic load while the loop
// runs, so it can sit on the check path.
type wakeGate struct {
	parked atomic.Bool
	wake   chan struct{}
}

func newWakeGate() *wakeGate { return &wakeGate{wake: make(chan struct{}, 1)} }

// poke wakes the loop if it sleeps. A nil gate does nothing. Call it after
// the change the loop should see.
func (g *wakeGate) poke() {
	if g != nil && g.parked.Load() && g.parked.CompareAndSwap(true, false) {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
}

// idleRounds is how many rounds in a row without work a gated loop runs
// before it sleeps until poked.
const idleRounds = 10

// everyWhileBusy runs fn every d until the node stops, as every does, but
// after idleRounds rounds in which fn found no work, it sleeps until g is
// poked. Before it sleeps it marks itself parked and runs fn once more, so
// a change made before a poke that saw it running is never left behind.
func (n *Node) everyWhileBusy(d time.Duration, g *wakeGate, fn func() (worked bool)) {
	defer n.wg.Done()
	t := time.NewTimer(d)
	defer t.Stop()
	idle := 0
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if fn() {
			idle = 0
		} else if idle++; idle >= idleRounds {
			g.parked.Store(true)
			if fn() {
				g.parked.Store(false)
				idle = 0
			} else {
				select {
				case <-n.stop:
					return
				case <-g.wake:
				}
				idle = 0
			}
		}
		t.Reset(d)
	}
}
