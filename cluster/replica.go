package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
)

// Counter copies. A node copies every counter that a check changed to the
// node that would own its key if this one failed (its successor: the
// owner in the ring without this node), which keeps the copies apart from
// its own counters. Copies are sent continuously, without a timer: a round
// takes what changed since the last one and leaves as soon as the one
// before it has returned, so a copy lags its counter by one round (a
// round trip and the changes gathered during it). A policy with
// Replication "sync" goes further: its allowed checks are answered only
// once a round that includes them has reached the successor.
//
// The successor uses its copies twice: when the owner cannot answer a
// check, it decides the check against its copy and counts it there (see
// failover), and when the ring drops a crashed owner, it folds the copies
// of the keys it now owns into its counters before it takes their checks.
// The hits it admitted for an owner that is still a member are sent back
// to the owner (fold-back), so that neither side's hits are forgotten.

// methodReplica carries counter copies to a successor.
const methodReplica = "replica"

// changeTracker is a store that lists the counters checks changed: the
// memory store with TrackChanges. It lists a counter once the hits since
// its last copy reach bucket.CopyEvery (every hit below a capacity of
// 2048 and for sync policies, 1/1024 of the capacity above), and tells
// the copy loop when a list gets its first counter, so that the loop
// wakes only when a copy is due, not on every check.
type changeTracker interface {
	Tracking() bool
	Changed(fn func(k bucket.Key, st bucket.State))
	NotifyChanged(fn func())
	MarkChanged(k bucket.Key)
}

// markChanged lists the counter of k for the next round of copies at
// once: for changes made outside a check (a lease, hits folded back),
// which CopyEvery does not count. It wakes the copy loop.
func (n *Node) markChanged(k bucket.Key) {
	if ct, ok := n.store.(changeTracker); ok && n.repl != nil {
		ct.MarkChanged(k)
	}
}

// replicaTimeout bounds one replica or fold-back call.
const replicaTimeout = 2 * time.Second

// replicator runs the copy rounds.
type replicator struct {
	pending atomic.Bool   // a round is due
	kick    chan struct{} // wakes the loop (capacity 1)

	mu   sync.Mutex
	next *copyRound // the round that starts next, if a sync check waits for it
	// failing holds the successors whose last round of copies did not
	// arrive; nfailing is its length, read on the check path.
	failing  map[string]bool
	nfailing atomic.Int32
	calls    atomic.Uint64 // replica calls made, for the benchmarks
}

// setFailing records whether the last round to successor to arrived.
func (r *replicator) setFailing(to string, failed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing == nil {
		r.failing = map[string]bool{}
	}
	if failed {
		r.failing[to] = true
	} else {
		delete(r.failing, to)
	}
	r.nfailing.Store(int32(len(r.failing)))
}

// copyFailing reports whether this node looks cut off from the others:
// the last round of copies to the successor of k (which it owns) did not
// arrive, nor did those to more than half of the other members. The other
// side may be deciding its keys from their copies by now, so it answers
// no check of k allowed on its counter alone (see stored): the failure
// mode decides those it allows. One successor that crashed is not enough:
// its keys' owners go on deciding until the ring drops it. One atomic
// load while every successor is reached.
func (n *Node) copyFailing(k bucket.Key) bool {
	r := n.repl
	if r == nil || r.nfailing.Load() == 0 {
		return false
	}
	rt := n.route.Load()
	if rt == nil || rt.succ == nil {
		return false
	}
	var buf [128]byte
	enc, _ := k.AppendBinary(buf[:0])
	to := rt.succ.Owner(enc)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.failing[to] {
		return false
	}
	return n.cutOffLocked(rt)
}

// cutOff reports whether the last rounds of copies to more than half of
// the other members failed: this node looks cut off from them.
func (n *Node) cutOff() bool {
	r := n.repl
	if r == nil || r.nfailing.Load() == 0 {
		return false
	}
	rt := n.route.Load()
	if rt == nil || rt.succ == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return n.cutOffLocked(rt)
}

// cutOffLocked is cutOff with repl.mu held.
func (n *Node) cutOffLocked(rt *routeTable) bool {
	failing := 0
	for name := range n.repl.failing {
		if _, ok := rt.addrs[name]; ok && name != rt.self {
			failing++
		}
	}
	return 2*failing > rt.succ.Len()
}

// copyRound is closed once its copies have been sent (or have failed);
// failedTo is set first to the successors some did not reach.
type copyRound struct {
	done     chan struct{}
	failedTo map[string]bool
}

func newReplicator() *replicator { return &replicator{kick: make(chan struct{}, 1)} }

// changed tells the loop that a counter changed: one atomic load when a
// round is already due.
func (r *replicator) changed() {
	if !r.pending.Load() && r.pending.CompareAndSwap(false, true) {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// replicaLoop sends a round of copies each time counters changed, one
// round at a time, until the node stops.
func (n *Node) replicaLoop(tr changeTracker) {
	defer n.wg.Done()
	r := n.repl
	tr.NotifyChanged(r.changed)
	r.changed() // for what was listed before
	var carry []handoffItem
	for {
		select {
		case <-n.stop:
			r.mu.Lock()
			if r.next != nil {
				r.next.failedTo = map[string]bool{"": true}
				close(r.next.done)
				r.next = nil
			}
			r.mu.Unlock()
			return
		case <-r.kick:
		}
		r.pending.Store(false)
		r.mu.Lock()
		round := r.next
		r.next = nil
		r.mu.Unlock()
		// The copies a round before did not deliver go again with this
		// one (the successor merges, so an older state is harmless).
		retry := carry
		failed, failedTo := n.sendReplicas(n.successorGroups(func(add func(bucket.Key, bucket.State) bool) {
			for i := range retry {
				if !add(retry[i].key(), retry[i].state()) {
					return
				}
			}
			tr.Changed(func(k bucket.Key, st bucket.State) { add(k, st) })
		}))
		carry = failed[:min(len(failed), maxCarry)]
		if round != nil {
			round.failedTo = failedTo
			close(round.done)
		}
	}
}

// waitCopied returns once a round of copies that started after the call
// has ended: the changes made before the call are then on the successor,
// and it returns true. A round that did not reach a successor (a slow
// one on a loaded machine, or a crashed one that the ring has not
// dropped yet) is not a failure: what it did not deliver goes again with
// the next round, to the successor of the ring then, and the wait goes on
// up to FailoverTimeout from the call. Answering before would give an
// allowed answer the successor may never hold. It returns false past
// that deadline (see replica_send_errors_total), at once when the rounds
// to most other members fail too (cutOff), when ctx ends or the node
// stops.
func (n *Node) waitCopied(ctx context.Context) bool {
	r := n.repl
	deadline := time.Now().Add(n.cfg.FailoverTimeout)
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
		r.mu.Lock()
		round := r.next
		if round == nil {
			round = &copyRound{done: make(chan struct{})}
			r.next = round
		}
		r.mu.Unlock()
		r.changed()
		select {
		case <-round.done:
		case <-ctx.Done():
			return false
		case <-n.stop:
			return false
		}
		if len(round.failedTo) == 0 {
			return true
		}
		// The next round carries what failed, to the successor of the
		// ring then (a crashed one is dropped from it meanwhile). A
		// node cut off from most others stops at once: the others may
		// be deciding its keys on their copies already.
		if round.failedTo[""] || n.cutOff() || time.Now().Add(pause).After(deadline) {
			return false
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		case <-n.stop:
			t.Stop()
			return false
		}
	}
}

// copied is called after a check decided d in this node's store: with
// sync replication it waits for a round of copies (the store listed the
// counter: CopyEvery is 1). An async change needs nothing here: the
// store wakes the copy loop once a copy is due. It returns false when a
// sync policy's copy did not reach the successor: the check's allowed
// answer then rests on this counter alone, which a partition may have
// handed to the successor already.
func (n *Node) copied(ctx context.Context, p *policyEntry, d Decision, hits int64) bool {
	if n.repl == nil || !d.Allowed || hits <= 0 || p.Replication != bucket.ReplicateSync {
		return true
	}
	return n.waitCopied(ctx)
}

// replicateAll sends every counter this node owns to its successor: after
// a ring change, when successors may have changed.
func (n *Node) replicateAll() {
	hs, ok := n.store.(handoffStore)
	if !ok || n.replicas == nil {
		return
	}
	groups := n.successorGroups(func(add func(bucket.Key, bucket.State) bool) {
		hs.Range(n.clock.Now(), add)
	})
	n.sendReplicas(groups)
}

// maxCarry bounds the copies a failed round leaves to the next one.
const maxCarry = 1 << 16

// successorGroups groups the counters that each yields by the successor of
// their key, keeping only keys this node owns in the current ring.
func (n *Node) successorGroups(each func(add func(bucket.Key, bucket.State) bool)) map[string][]handoffItem {
	rt := n.route.Load()
	groups := map[string][]handoffItem{}
	each(func(k bucket.Key, st bucket.State) bool {
		if rt == nil || rt.succ == nil {
			return false
		}
		var buf [128]byte
		enc, _ := k.AppendBinary(buf[:0])
		if rt.ring.Owner(enc) != rt.self {
			return true
		}
		if to := rt.succ.Owner(enc); to != "" {
			groups[to] = append(groups[to], itemOf(k, st))
		}
		return true
	})
	return groups
}

// sendReplicas sends each group to its successor, and returns the copies
// that did not arrive and the successors they were for.
func (n *Node) sendReplicas(groups map[string][]handoffItem) (failed []handoffItem, failedTo map[string]bool) {
	rt := n.route.Load()
	if rt == nil {
		if len(groups) > 0 {
			failedTo = map[string]bool{"": true}
		}
		return nil, failedTo
	}
	for to, items := range groups {
		sent, err := n.sendCounters(n.life, rt.addrs[to], methodReplica, items, replicaTimeout, nil)
		if n.repl != nil {
			n.repl.calls.Add(uint64((len(items) + handoffChunk - 1) / handoffChunk))
			n.repl.setFailing(to, err != nil)
		}
		n.metrics.replicaSent.Add(float64(sent))
		if err != nil {
			if failedTo == nil {
				failedTo = map[string]bool{}
			}
			failedTo[to] = true
			failed = append(failed, items[min(max(sent, 0), len(items)):]...)
			n.metrics.replicaErrors.Add(float64(len(items) - sent))
			n.warnings.Log("copying counters to their successor failed; a crash of this node would lose their last hits", "to", to, "counters", len(items)-sent, "err", err)
		}
	}
	return failed, failedTo
}

// receiveReplica keeps the copies a peer sent, merged with those it sent
// before.
func (n *Node) receiveReplica(ctx context.Context, body []byte) error {
	if n.replicas == nil {
		return nil
	}
	merged, _, err := n.receiveStates(ctx, methodReplica, body, n.replicas.Merge)
	n.metrics.replicaReceived.Add(float64(merged))
	return err
}

// promoteReplicas folds the copies of the keys that rt gives this node
// into its own counters (the more consumed state wins), drops them from
// the copies, and publishes rt: under copyMu, so that no check decided on
// a copy meanwhile is lost.
func (n *Node) promoteReplicas(rt *routeTable) {
	n.copyMu.Lock()
	defer n.copyMu.Unlock()
	defer n.route.Store(rt)
	hs, ok := n.store.(handoffStore)
	if !ok || n.replicas == nil || rt == nil {
		return
	}
	type copyOf struct {
		k  bucket.Key
		st bucket.State
	}
	var mine []copyOf
	now := n.clock.Now()
	n.replicas.Range(now, func(k bucket.Key, st bucket.State) bool {
		if owner, _ := rt.owner(k); owner == rt.self {
			mine = append(mine, copyOf{k, st})
		}
		return true
	})
	if len(mine) == 0 {
		return
	}
	table := *n.policies.Load()
	for _, c := range mine {
		if p := table[c.k.Policy]; p != nil {
			hs.Merge(c.k, p.Policy, c.st, now)
		}
		n.replicas.Delete(c.k)
		// The hits admitted on the copy for the old owner are in the
		// counter now, which a hand-over gives back to it if it returns:
		// folding them back as well would count them twice.
		n.taken.forget(c.k)
	}
	n.metrics.replicaPromoted.Add(float64(len(mine)))
	n.log.Info("took over counter copies of keys now owned here", "counters", len(mine))
}

// decideOnCopy decides a check whose owner could not answer, on the node
// that succeeds it: against the copy of the counter, counted in the copy
// and kept for the fold-back. A key this node owns by now (its copy
// promoted) is decided in the store. ok is false when the node keeps no
// copies.
func (n *Node) decideOnCopy(ctx context.Context, p *policyEntry, k bucket.Key, hits int64, now time.Time) (d Decision, ok bool) {
	if n.replicas == nil {
		return Decision{}, false
	}
	n.copyMu.RLock()
	defer n.copyMu.RUnlock()
	return n.decideOnCopyLocked(ctx, p, k, hits, now)
}

// decideOnCopyLocked is decideOnCopy with copyMu read-locked.
func (n *Node) decideOnCopyLocked(ctx context.Context, p *policyEntry, k bucket.Key, hits int64, now time.Time) (d Decision, ok bool) {
	if n.replicas == nil {
		return Decision{}, false
	}
	if rt := n.route.Load(); rt != nil {
		// A key this node decides (its ring gives it the key, or the
		// owner's hand-over message does) is decided on its counter.
		var buf [128]byte
		enc, _ := k.AppendBinary(buf[:0])
		if owner, _, _ := n.where(rt, enc, false); owner == rt.self {
			d, err := n.store.Take(ctx, k, p.Policy, hits, now)
			return d, err == nil
		}
	}
	d, _ = n.replicas.Take(ctx, k, p.Policy, hits, now)
	if d.Allowed && hits > 0 {
		n.taken.add(k, hits)
	}
	return d, true
}

// failoverReq is a check sent to a key's successor because its owner
// could not answer; failoverRes is the answer.
type failoverReq struct {
	Policy string `msgpack:"p"`
	Key    string `msgpack:"k"`
	Hits   int64  `msgpack:"h"`
}

type failoverRes struct {
	OK         bool          `msgpack:"ok"`
	Allowed    bool          `msgpack:"a"`
	Limit      int64         `msgpack:"l"`
	Remaining  int64         `msgpack:"r"`
	ResetAfter time.Duration `msgpack:"ra"`
	RetryAfter time.Duration `msgpack:"ry"`
}

func (r failoverRes) decision() Decision {
	return Decision{Allowed: r.Allowed, Limit: r.Limit, Remaining: r.Remaining, ResetAfter: r.ResetAfter, RetryAfter: r.RetryAfter}
}

// receiveFailover decides a check a peer could not get its owner to
// decide.
func (n *Node) receiveFailover(ctx context.Context, body []byte) ([]byte, error) {
	var req failoverReq
	if err := msgpack.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("cluster: failover: %w", err)
	}
	p, err := n.checkInput(*n.policies.Load(), req.Policy, req.Key, req.Hits)
	if err != nil {
		return nil, err
	}
	var res failoverRes
	if d, ok := n.decideOnCopy(ctx, p, bucket.Key{Policy: req.Policy, ID: req.Key}, req.Hits, n.clock.Now()); ok {
		res = failoverRes{OK: true, Allowed: d.Allowed, Limit: d.Limit, Remaining: d.Remaining, ResetAfter: d.ResetAfter, RetryAfter: d.RetryAfter}
	}
	return msgpack.Marshal(res)
}

// takenHits are the hits a successor admitted for owners that could not
// answer, by key, until they are folded back into the owners' counters.
type takenHits struct {
	mu   sync.Mutex
	m    map[bucket.Key]int64
	held chan struct{} // wakes foldBackLoop when hits are first held (capacity 1)
}

func newTakenHits() *takenHits { return &takenHits{held: make(chan struct{}, 1)} }

func (t *takenHits) add(k bucket.Key, hits int64) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[bucket.Key]int64{}
	}
	first := len(t.m) == 0
	t.m[k] += hits
	t.mu.Unlock()
	if first {
		select {
		case t.held <- struct{}{}:
		default:
		}
	}
}

// empty reports whether no hits wait to be folded back.
func (t *takenHits) empty() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m) == 0
}

// snapshot returns the hits taken so far, or nil.
func (t *takenHits) snapshot() map[bucket.Key]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) == 0 {
		return nil
	}
	out := make(map[bucket.Key]int64, len(t.m))
	for k, v := range t.m {
		out[k] = v
	}
	return out
}

// forget drops every hit of k.
func (t *takenHits) forget(k bucket.Key) {
	t.mu.Lock()
	delete(t.m, k)
	t.mu.Unlock()
}

// settle forgets hits of k that were folded back (or need not be).
func (t *takenHits) settle(k bucket.Key, hits int64) {
	t.mu.Lock()
	if t.m[k] -= hits; t.m[k] <= 0 {
		delete(t.m, k)
	}
	t.mu.Unlock()
}

// foldBackInterval is how often a successor tries to give the hits it
// admitted for an unreachable owner back to it, while it holds some.
const foldBackInterval = 250 * time.Millisecond

// foldBackLoop sleeps until this node admits hits on a copy, then folds
// them back every foldBackInterval until none are left: an idle node has
// no timer here (a 250 ms ticker woke every node 4 times a second).
func (n *Node) foldBackLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case <-n.taken.held:
		}
		for {
			t := time.NewTimer(foldBackInterval)
			select {
			case <-n.stop:
				t.Stop()
				return
			case <-t.C:
			}
			n.foldBack()
			if n.taken.empty() {
				break
			}
		}
	}
}

// foldBack sends the hits this node admitted for owners that could not
// answer back to them, where they are added to the counters (not merged:
// both sides' hits count). Keys this node owns by now need no fold-back:
// their copies, which counted the hits, became its counters.
func (n *Node) foldBack() {
	taken := n.taken.snapshot()
	rt := n.route.Load()
	if taken == nil || rt == nil {
		return
	}
	groups := map[string][]failoverReq{}
	for k, hits := range taken {
		owner, _ := rt.owner(k)
		if owner == rt.self || owner == "" {
			n.taken.settle(k, hits)
			continue
		}
		groups[owner] = append(groups[owner], failoverReq{Policy: k.Policy, Key: k.ID, Hits: hits})
	}
	for owner, items := range groups {
		for len(items) > 0 {
			chunk := items[:min(len(items), handoffChunk)]
			items = items[len(chunk):]
			body, err := msgpack.Marshal(chunk)
			if err == nil {
				ctx, cancel := context.WithTimeout(n.life, replicaTimeout)
				_, err = n.tr.Call(ctx, rt.addrs[owner], methodFoldBack, body)
				cancel()
			}
			if err != nil {
				n.warnings.Log("folding hits back into their owner's counters failed; retrying", "to", owner, "counters", len(chunk), "err", err)
				break
			}
			for _, it := range chunk {
				n.taken.settle(bucket.Key{Policy: it.Policy, ID: it.Key}, it.Hits)
			}
			n.log.Info("folded hits admitted for an unreachable owner back into its counters", "to", owner, "counters", len(chunk))
		}
	}
}

// receiveFoldBack adds to this node's counters the hits a successor
// admitted while this node could not answer.
func (n *Node) receiveFoldBack(ctx context.Context, body []byte) error {
	var items []failoverReq
	if err := msgpack.Unmarshal(body, &items); err != nil {
		return fmt.Errorf("cluster: fold-back: %w", err)
	}
	if len(items) > handoffChunk {
		return fmt.Errorf("cluster: fold-back: %d counters, at most %d", len(items), handoffChunk)
	}
	table := *n.policies.Load()
	now := n.clock.Now()
	for _, it := range items {
		p, err := n.checkInput(table, it.Policy, it.Key, it.Hits)
		if err != nil {
			continue
		}
		k := bucket.Key{Policy: it.Policy, ID: it.Key}
		if _, err := n.store.Take(ctx, k, unbounded(p.Policy, it.Key), it.Hits, now); err != nil {
			return fmt.Errorf("cluster: fold-back: %w", err)
		}
		n.markChanged(k) // the unbounded policy's CopyEvery would wait for 2^43 hits
	}
	return nil
}

// unbounded returns p for key with a capacity no count reaches and the
// same time step, so that a Take under it adds hits whatever the counter
// holds: how hits admitted elsewhere are added to a counter. They count
// from now, later than they came, which only makes the limit stricter.
func unbounded(p bucket.Policy, key string) bucket.Policy {
	p.Limit = p.LimitFor(key)
	p.Overrides = nil
	switch p.Algorithm {
	case bucket.GCRA, bucket.TokenBucket:
		interval := max(1, p.Window.Microseconds()/p.Limit)
		p.Burst = (1<<53)/interval - p.Limit - 1
	default:
		p.Limit = bucket.MaxCount
	}
	return p
}

// itemOf is a counter as a hand-off or replica message carries it.
func itemOf(k bucket.Key, st bucket.State) handoffItem {
	return handoffItem{Policy: k.Policy, Key: k.ID, T: st.T, Count: st.Count, Idle: st.Idle, Span: st.Span}
}

func (it *handoffItem) key() bucket.Key { return bucket.Key{Policy: it.Policy, ID: it.Key} }

func (it *handoffItem) state() bucket.State {
	return bucket.State{T: it.T, Count: it.Count, Idle: it.Idle, Span: it.Span}
}

// sendCounters sends items to addr with method (hand-off or replica), in
// chunks of handoffChunk, each within timeout. sent(chunk, answer), when
// not nil, runs after each chunk that arrived, with the receiver's
// answer. It stops at the first failure and returns how many counters
// arrived.
func (n *Node) sendCounters(ctx context.Context, addr, method string, items []handoffItem, timeout time.Duration, sent func(chunk []handoffItem, answer []byte)) (int, error) {
	total := 0
	var body []byte
	for len(items) > 0 {
		chunk := items[:min(len(items), handoffChunk)]
		items = items[len(chunk):]
		msg := handoffMsg{From: n.cfg.NodeName, Version: 1, Items: chunk}
		body = msg.appendTo(body[:0]) // a call keeps no body once it returns
		cctx, cancel := context.WithTimeout(ctx, timeout)
		answer, err := n.tr.Call(cctx, addr, method, body)
		cancel()
		if err != nil {
			return total, err
		}
		total += len(chunk)
		if sent != nil {
			sent(chunk, answer)
		}
	}
	return total, nil
}
