package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster/ring"
	"github.com/vibewell/ratelimit/internal/msgpackfit"
)

// Hand-over: how a key's ownership moves between live members (a join, a
// leave, a restart rejoining) with one node deciding it at a time, from
// the counter that holds all its hits.
//
// A node whose ring changes switches its route table under copyMu's write
// lock: every check it decides in its store holds the read lock from
// reading the table to the store's answer, so each either finished before
// the switch or sees the new table. It then sends the counters of the keys
// it no longer owns to their new owners (merged there) and, to every
// other member of its new ring, a hand-over message naming that ring: "I
// no longer decide the keys this ring gives to others, and their counters
// are with them". Until those calls return, its checks of the keys it gave
// away wait (routeTable.hand); then they go to the new owner.
//
// A node that gains keys from a member still alive (routeTable.await)
// decides none of them before that member's hand-over message has given
// them away, and holds their checks meanwhile, up to handoverWait. A node
// whose own ring still names the old owner, but which holds its hand-over
// message, decides the keys that message gives it and sends the others to
// their new owner directly. So in whatever order the members see a change,
// no two decide a key at once, and none decides it from a fresh counter
// while the old one is alive.
//
// A joining node, whose ring may be a partial view, hands nothing over
// until it is established: its messages only tell its peers its ring
// (handoverMsg.Joining), so that none takes a key as handed back to it
// while the counter is here.

// methodHandover carries a hand-over message.
const methodHandover = "handover"

// handoverWait bounds how long a check waits for a hand-over: a new owner
// for its old owner's message, an old owner for its calls to return. Past
// it, the check is decided as the tables say, and the wait is logged.
const handoverWait = 3 * time.Second

// Bounds of a hand-over message.
const (
	maxHandoverBytes   = 64 << 10
	maxHandoverMembers = 1024
	maxMemberNameLen   = 256
)

// handoverMsg is a hand-over message: From's ring after its change.
// Joining marks the ring of a node not established yet (a partial view,
// maybe): it tells its peers which ring it has, for their establishment,
// and gives no key away.
type handoverMsg struct {
	From    string   `msgpack:"f"`
	Members []string `msgpack:"m"`
	Joining bool     `msgpack:"j,omitempty"`
}

// handing is the hand-over a node runs after its ring changed; done is
// closed once its calls returned.
type handing struct {
	done     chan struct{}
	finished atomic.Bool
}

func newHanding() *handing { return &handing{done: make(chan struct{})} }

func (h *handing) finish() {
	if h != nil && h.finished.CompareAndSwap(false, true) {
		close(h.done)
	}
}

// handovers is a node's state of hand-overs.
type handovers struct {
	// finals holds, per member, the ring of the last hand-over message it
	// sent this node: copy on write, read on the check path.
	finals atomic.Pointer[map[string]*finalRing]
	// joining holds, per member not established yet, the ring of its last
	// message (see handoverMsg.Joining), under mu: read by establish only.
	joining map[string]*ring.Ring
	// established is set once this node's ring is the cluster's: it has
	// joined through its seeds (or has none) and its ring has peers.
	established atomic.Bool
	// handPending is set when a ring change's hand-over was put off
	// because this node was not established: its ring may be a partial
	// view of its peers', which gives others keys that are this node's.
	// The hand-over runs for the ring of the moment once it is.
	handPending atomic.Bool
	// gone is set once this node, leaving, has begun to hand its keys to
	// a ring without it: from then on its store holds no counter it may
	// decide from (see where).
	gone atomic.Bool
	// gen counts the changes of finals (settled).
	gen atomic.Uint64
	// inflight counts the peer requests being served and the checks of
	// this node's callers, so that Close lets them finish before it
	// closes the connections; draining refuses new checks meanwhile.
	inflight atomic.Int64
	draining atomic.Bool

	// ver counts the changes of finals and of the route table; a check
	// reads it before the table, so that it misses none while it waits.
	ver atomic.Uint64
	mu  sync.Mutex
	ch  chan struct{} // closed on each change
}

// waitChange is where's answer for "wait for the next change of the
// route table or of finals" (never closed: awaitChange waits on changed).
var waitChange = make(chan struct{})

// changed returns a channel closed at the next change.
func (h *handovers) changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ch == nil {
		h.ch = make(chan struct{})
	}
	return h.ch
}

// notify wakes the checks that wait for a change.
func (h *handovers) notify() {
	h.mu.Lock()
	h.ver.Add(1)
	if h.ch != nil {
		close(h.ch)
		h.ch = nil
	}
	h.mu.Unlock()
}

// awaitChange waits until deadline for wait, or, when wait is
// waitChange, for a change after version v. It reports whether the wait
// ended before the deadline.
func (h *handovers) awaitChange(ctx context.Context, wait <-chan struct{}, v uint64, deadline time.Time) bool {
	if wait == waitChange {
		wait = h.changed()
		if h.ver.Load() != v {
			return true
		}
	}
	return awaitHandover(ctx, wait, deadline)
}

// finalRing is the ring of a member's last hand-over message, and seq
// the value of gen that recording it made.
type finalRing struct {
	*ring.Ring
	seq uint64
}

// final returns the ring member last handed over with, or nil.
func (h *handovers) final(member string) *finalRing {
	if m := h.finals.Load(); m != nil {
		return (*m)[member]
	}
	return nil
}

// setFinal records member's hand-over message.
func (h *handovers) setFinal(member string, r *ring.Ring) {
	h.mu.Lock()
	next := map[string]*finalRing{member: {Ring: r, seq: h.gen.Add(1)}}
	if m := h.finals.Load(); m != nil {
		for k, v := range *m {
			if k != member {
				next[k] = v
			}
		}
	}
	h.finals.Store(&next)
	h.ver.Add(1)
	if h.ch != nil {
		close(h.ch)
		h.ch = nil
	}
	h.mu.Unlock()
}

// setJoining records the ring of a joining member's message.
func (h *handovers) setJoining(member string, r *ring.Ring) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.joining == nil {
		h.joining = map[string]*ring.Ring{}
	}
	h.joining[member] = r
}

// named returns the ring member's last message named, joining or not;
// nil if none.
func (h *handovers) named(member string) *ring.Ring {
	if f := h.final(member); f != nil {
		return f.Ring
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.joining[member]
}

// keepFinals forgets the messages of members keep rejects.
func (h *handovers) keepFinals(keep func(member string) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range h.joining {
		if !keep(k) {
			delete(h.joining, k)
		}
	}
	m := h.finals.Load()
	if m == nil {
		return
	}
	next := map[string]*finalRing{}
	for k, v := range *m {
		if keep(k) {
			next[k] = v
		}
	}
	if len(next) == len(*m) {
		return
	}
	h.gen.Add(1)
	if len(next) == 0 {
		h.finals.Store(nil)
		return
	}
	h.finals.Store(&next)
}

// forget drops member's message: it rejoined as a new process.
func (h *handovers) forget(member string) {
	h.keepFinals(func(m string) bool { return m != member })
}

// prepareRoute fills in what rt needs to hand keys over, before it is
// published: the ring before it (for a node that has just joined, its
// peers' ring: the ring without itself), the live members it gains keys
// from, and its hand-over, not yet run.
func (n *Node) prepareRoute(old, rt *routeTable) {
	rt.hand = newHanding()
	rt.seq = n.ho.gen.Load()
	if old != nil && n.ho.established.Load() {
		rt.prev = old.ring
	} else {
		rt.prev = ring.New(slices.DeleteFunc(rt.ring.Members(), func(m string) bool { return m == rt.self }), n.cfg.Ring)
	}
	n.establish(rt)
	prev, now := rt.prev.Owners(), rt.ring.Owners()
	if len(prev) == len(now) {
		for i, o := range now {
			if p := prev[i]; o == rt.self && p != rt.self && p != "" && rt.ring.Has(p) {
				if rt.await == nil {
					rt.await = map[string]bool{}
				}
				rt.await[p] = true
			}
		}
	}
	n.ho.keepFinals(rt.ring.Has)
}

// establish marks the node established once rt is the cluster's ring:
// the node started the cluster, or it has joined through its seeds and
// every peer in rt has sent a hand-over message (joining or not) naming
// rt's members (its
// ring may otherwise be a partial view: memberlist's join need not bring
// every member at once). Until then its tables take the ring without it
// as the one before, so that it awaits each key from the peer that held
// it. A node whose peers do not all answer is established handoverWait
// after its join.
func (n *Node) establish(rt *routeTable) {
	if rt == nil || n.ho.established.Load() || !rt.joined {
		return
	}
	ok := n.gossip.bootstrap.Load() || time.Since(n.gossip.joinedAt()) > handoverWait
	if !ok && rt.ring.Len() > 1 {
		ok = true
		for _, m := range rt.ring.Members() {
			if r := n.ho.named(m); m != rt.self && (r == nil || !sameMembers(r, rt.ring)) {
				ok = false
				break
			}
		}
	}
	if ok {
		n.ho.established.Store(true)
		n.ho.notify()
		if n.ho.handPending.Load() {
			select {
			case n.gossip.change <- struct{}{}: // rebuild runs it
			default:
			}
		}
	}
}

// where says who decides the key encoded as enc under rt: this node (in
// its store) when owner is rt.self, else the member to forward to. wait,
// when not nil, says that a hand-over is in flight: the caller waits on it
// (up to handoverWait) and asks again.
//
// A node that has handed its keys over as it leaves (ho.gone) decides
// nothing from its store, whatever a table or a peer's hand-over message
// says: its counters are with their new owners, so a check decided here
// would start from nothing. (A peer's message from before the leave still
// names it as an owner; a ring rebuilt after a member's false death, as a
// starved machine makes, has it read that message again.) Such a check
// goes to the owner in the node's ring, or, when that ring is empty, to
// no one (owner ""): the failure mode decides it.
func (n *Node) where(rt *routeTable, enc []byte, strict bool) (owner, addr string, wait <-chan struct{}) {
	owner, addr, wait = n.whereTables(rt, enc, strict)
	if owner == rt.self && n.ho.gone.Load() {
		if owner = rt.ring.Owner(enc); owner == rt.self {
			owner = ""
		}
		return owner, rt.addrs[owner], nil
	}
	return owner, addr, wait
}

// whereTables is where as the tables say.
//
// A node not established yet (its ring may be a partial view of its
// peers) decides nothing: it waits for its ring once joined, and for a
// peer's check (strict) even before. A node that has not joined at all
// decides its own callers' checks alone.
func (n *Node) whereTables(rt *routeTable, enc []byte, strict bool) (owner, addr string, wait <-chan struct{}) {
	self := rt.self
	o := rt.ring.Owner(enc)
	if !n.ho.established.Load() && (strict || n.gossip.isJoined()) {
		n.establish(rt) // once the wait for the peers has run out
	}
	if !n.ho.established.Load() && (strict || n.gossip.isJoined()) {
		if o == "" {
			o = self
		}
		return o, rt.addrs[o], waitChange
	}
	if n.settled(rt) {
		if o == "" || o == self {
			return self, "", nil
		}
		return o, rt.addrs[o], nil
	}
	if o == "" || o == self {
		if len(rt.await) > 0 {
			if p := rt.prev.Owner(enc); rt.await[p] {
				f := n.ho.final(p)
				if f == nil && !strict && rt.addrs[p] != "" {
					// p has not changed its ring as far as this node
					// knows: it decides the key until it hands it over
					// (and, once it has, passes the check back here,
					// where a peer's check waits for its message).
					return p, rt.addrs[p], nil
				}
				if f == nil || f.Owner(enc) != self {
					// p has not given it to this node yet (or gave it
					// to another: one of the two rings is behind).
					return self, "", waitChange
				}
			}
		}
		return self, "", nil
	}
	handing := rt.hand != nil && !rt.hand.finished.Load()
	f := n.ho.final(o)
	if !handing && f == nil {
		return o, rt.addrs[o], nil
	}
	if rt.prev != nil && rt.prev.Owner(enc) == self {
		// This node gave the key away in its last change: to its new
		// owner, once the counters are there; a hand-over message the
		// owner sent before it holds nothing about the key's move.
		if handing {
			return o, rt.addrs[o], rt.hand.done
		}
		if f == nil || f.seq <= rt.seq {
			return o, rt.addrs[o], nil
		}
	}
	if f != nil {
		// The owner this ring names has handed its keys over to a ring
		// this node has not built yet.
		switch e := f.Owner(enc); {
		case e == self:
			return self, "", nil
		case e != o && e != "" && rt.addrs[e] != "":
			return e, rt.addrs[e], nil
		}
	}
	return o, rt.addrs[o], nil
}

// handingOver reports whether keys may be changing owner under rt: a
// hand-over of this node's in flight, one awaited from a peer, or a
// peer's message ahead of rt.
func (n *Node) handingOver(rt *routeTable) bool { return !n.settled(rt) }

// settled reports whether rt alone says who decides each key: this node
// is established, its hand-over has run, and every peer's last hand-over
// message names rt's ring. Once found, it is remembered until a message
// changes finals.
func (n *Node) settled(rt *routeTable) bool {
	gen := n.ho.gen.Load()
	if rt.settledAt.Load() == gen+1 {
		return true
	}
	if !n.ho.established.Load() || (rt.hand != nil && !rt.hand.finished.Load()) {
		return false
	}
	for p := range rt.await {
		if f := n.ho.final(p); f == nil || !sameMembers(f.Ring, rt.ring) {
			return false
		}
	}
	if m := n.ho.finals.Load(); m != nil {
		for _, f := range *m {
			if !sameMembers(f.Ring, rt.ring) {
				return false
			}
		}
	}
	rt.settledAt.Store(gen + 1)
	return true
}

// sameMembers reports whether two rings have the same members.
func sameMembers(a, b *ring.Ring) bool {
	if a.Len() != b.Len() {
		return false
	}
	for _, m := range a.Members() {
		if !b.Has(m) {
			return false
		}
	}
	return true
}

// awaitHandover waits on wait until deadline or ctx's end; it reports
// whether wait ended first.
func awaitHandover(ctx context.Context, wait <-chan struct{}, deadline time.Time) bool {
	d := time.Until(deadline)
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-wait:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// decide decides a check in the cluster: in this node's store when it
// decides the key, else on the node that does. It waits while the key is
// being handed over (up to handoverWait).
func (n *Node) decide(ctx context.Context, p *policyEntry, key string, hits int64, now time.Time) (Decision, error) {
	k := bucket.Key{Policy: p.Name, ID: key}
	if n.gossip == nil || !n.partitioned {
		return n.takeHere(ctx, p, k, hits, now)
	}
	var deadline time.Time
	late := false
	for {
		v := n.ho.ver.Load()
		n.copyMu.RLock()
		rt := n.route.Load()
		owner, addr := "", ""
		var wait <-chan struct{}
		if rt != nil {
			var buf [128]byte
			enc, _ := k.AppendBinary(buf[:0])
			owner, addr, wait = n.where(rt, enc, false)
		} else if n.gossip.isJoined() {
			wait = waitChange // joined, its first ring not built yet
		}
		if wait == nil || late {
			if rt == nil || owner == rt.self {
				d, err := n.store.Take(ctx, k, p.Policy, hits, now)
				n.copyMu.RUnlock()
				return n.stored(ctx, p, k, hits, now, d, err)
			}
			n.copyMu.RUnlock()
			if owner == "" {
				return n.fallback(ctx, p, key, hits, now, max(rt.known, 1), errNoOwner)
			}
			return n.forward(ctx, p, key, hits, rt, owner, addr, now)
		}
		n.copyMu.RUnlock()
		if deadline.IsZero() {
			deadline = time.Now().Add(handoverWait)
		}
		if !n.ho.awaitChange(ctx, wait, v, deadline) {
			if err := ctx.Err(); err != nil {
				return Decision{}, err
			}
			late = true
			n.metrics.handoverLate.Inc()
			n.warnings.Log("a check waited handoverWait for a hand-over; decided as the tables say", "policy", p.Name)
		}
		now = n.clock.Now()
	}
}

// errNoOwner is the cause logged when a node that handed its keys over
// as it leaves has no member left to send a check to.
var errNoOwner = fmt.Errorf("%w: this node has handed its keys over and its ring holds no other member", ErrOwnerUnavailable)

// takeHere decides a check in this node's store, with the failure mode
// when the store fails.
func (n *Node) takeHere(ctx context.Context, p *policyEntry, k bucket.Key, hits int64, now time.Time) (Decision, error) {
	d, err := n.store.Take(ctx, k, p.Policy, hits, now)
	return n.stored(ctx, p, k, hits, now, d, err)
}

// stored finishes a decision of this node's store: copies it to the
// successor, or falls back to the failure mode when the store failed.
func (n *Node) stored(ctx context.Context, p *policyEntry, k bucket.Key, hits int64, now time.Time, d Decision, err error) (Decision, error) {
	if err != nil {
		if ctx.Err() != nil {
			return Decision{}, ctx.Err()
		}
		n.metrics.errors.Inc()
		return n.fallback(ctx, p, k.ID, hits, now, n.liveNodes(), err)
	}
	if !n.copied(ctx, p, d, hits) || (d.Allowed && hits > 0 && n.copyFailing(k)) {
		return n.fallback(ctx, p, k.ID, hits, now, n.liveNodes(), errNotCopied)
	}
	return d, nil
}

// handOver runs rt's hand-over: it sends the counters of the keys rt gives
// to others to their new owners, deleting them here once delivered (or
// keeping them as copies of keys this node succeeds), and a hand-over
// message to every other member, retrying each for up to handoverWait.
// It returns how many counters it sent. With joining (a node not
// established yet), it sends no counter, and messages marked joining.
func (n *Node) handOver(ctx context.Context, rt *routeTable, joining bool) int {
	defer n.ho.notify()
	defer rt.hand.finish()
	hs, ok := n.store.(handoffStore)
	if !ok || rt.ring.Len() == 0 {
		return 0
	}
	if !rt.ring.Has(rt.self) && n.leaving.Load() {
		// Before any counter or message leaves: from here on the new
		// owners may decide this node's keys.
		n.ho.gone.Store(true)
	}
	groups := map[string][]handoffItem{}
	if !joining {
		hs.Range(n.clock.Now(), func(k bucket.Key, st bucket.State) bool {
			if owner, _ := rt.owner(k); owner != rt.self && owner != "" {
				groups[owner] = append(groups[owner], itemOf(k, st))
			}
			return true
		})
	}
	var (
		total atomic.Int64
		wg    sync.WaitGroup
	)
	for _, m := range rt.ring.Members() {
		if m == rt.self {
			continue
		}
		items := groups[m]
		wg.Go(func() {
			deadline := time.Now().Add(handoverWait)
			for {
				sent, err := n.sendCounters(ctx, rt.addrs[m], methodHandoff, items, handoffTimeout, func(chunk []handoffItem, answer []byte) {
					n.dropHandedOff(hs, rt, m, chunk, answer)
				})
				total.Add(int64(sent))
				items = items[sent:]
				if err == nil {
					err = n.sendHandover(ctx, rt, m, joining)
				}
				if err == nil {
					return
				}
				if time.Now().After(deadline) || ctx.Err() != nil {
					n.log.Warn("hand-over failed; its keys' checks go to it anyway", "to", m, "counters", len(items), "err", err)
					return
				}
				select {
				case <-n.stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
	}
	wg.Wait()
	sent := int(total.Load())
	if sent > 0 {
		n.metrics.handedOff.Add(float64(sent))
		n.log.Info("handed off counters", "counters", sent, "owners", len(groups))
	}
	return sent
}

// sendHandover tells member that this node has handed over the keys rt
// gives to others; with joining, only that rt is its ring.
func (n *Node) sendHandover(ctx context.Context, rt *routeTable, member string, joining bool) error {
	body, err := msgpack.Marshal(handoverMsg{From: n.cfg.NodeName, Members: rt.ring.Members(), Joining: joining})
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, handoffTimeout)
	defer cancel()
	_, err = n.tr.Call(cctx, rt.addrs[member], methodHandover, body)
	return err
}

// errBadHandover answers a malformed hand-over message.
var errBadHandover = errors.New("cluster: malformed hand-over message")

// receiveHandover records a member's hand-over message.
func (n *Node) receiveHandover(ctx context.Context, body []byte) error {
	var m handoverMsg
	err := errLengthBeyondEnd
	if len(body) > maxHandoverBytes {
		err = fmt.Errorf("%d bytes, at most %d", len(body), maxHandoverBytes)
	} else if msgpackfit.Fits(body) {
		err = msgpack.Unmarshal(body, &m)
	}
	if err == nil && len(m.Members) > maxHandoverMembers {
		err = fmt.Errorf("%d members, at most %d", len(m.Members), maxHandoverMembers)
	}
	for i := 0; err == nil && i < len(m.Members); i++ {
		if l := len(m.Members[i]); l == 0 || l > maxMemberNameLen {
			err = fmt.Errorf("a member name of %d bytes, want 1 to %d", l, maxMemberNameLen)
		}
	}
	if err != nil {
		n.dropStates(methodHandover, "malformed", "", 1, err)
		return fmt.Errorf("%w: %w", errBadHandover, err)
	}
	rt := n.route.Load()
	from := n.senderName(ctx, rt, &handoffMsg{From: m.From})
	if rt == nil || from == "" || from == rt.self || !rt.ring.Has(from) {
		n.dropStates(methodHandover, "sender", from, 1, errors.New("not a member of this node's ring"))
		return fmt.Errorf("cluster: %s from %q: %w", methodHandover, capText(from), errNotMember)
	}
	if m.Joining {
		n.ho.setJoining(from, ring.New(m.Members, n.cfg.Ring))
	} else {
		n.ho.setFinal(from, ring.New(m.Members, n.cfg.Ring))
	}
	n.establish(n.route.Load())
	return nil
}

// drainPeers waits, up to d, until no peer request or check is in
// flight, so that answers are not cut by the closing connections.
func (n *Node) drainPeers(d time.Duration) {
	deadline := time.Now().Add(d)
	for n.ho.inflight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(5 * time.Millisecond) // the last answers' writes
}
