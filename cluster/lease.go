package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/internal/msgpackfit"
)

// Leases of allowance for hot allowed keys. A key checked often on a node
// that does not own it (a tenant-wide or global limit checked from every
// node) costs a forward per check. Instead, that node asks the owner for
// a lease: the owner decides the check that asks, and takes a slice of
// what remains as hits of its own counter, at once; the node then admits
// checks of the key from that slice, with no network hop, until the slice
// is used or the lease ends, and gives back what it did not use.
//
// Why it never admits more than the limit: the slice is counted in the
// owner's counter from the moment it is granted, so the slices and the
// owner's own checks never exceed what remains. A sliding window counts
// hits by slot (window/8, aligned on the epoch) and a fixed window by
// window, so the lease ends when the owner's current slot (or window)
// ends: every hit admitted under it falls in the slot it was counted in,
// and the owner's counter is exactly what a single node would hold. GCRA
// and token buckets count by time, not by slot, and are never leased.
//
// What it costs: a slice's unused hits are counted at the owner although
// nobody admitted them. A node gives back the unused part of a lease that
// has not been used for leaseIdle (refunded only while the lease's slot
// is still the owner's current one; later the hits leave with the slot),
// and on Leave. What is never given back (a lease that ends with hits
// left, a holder that crashes) stays counted until its slot leaves the
// window: at most window × 9/8. A grant is at most what remains divided by
// twice the ring's members, and about leaseTarget of the holder's checks
// (near the slot's end, what it needs until then beyond what it has
// left), so a key under-admits by at most the unused slices of its
// holders, and near the limit grants shrink to nothing and checks go to
// the owner again.

// DefaultLeaseMinLimit is the default Config.LeaseMinLimit.
const DefaultLeaseMinLimit = 1000

// Lease tuning.
const (
	leaseShards    = 64
	leaseHotSlots  = 64                     // per shard: checks counted for 4,096 keys in all
	leaseHotChecks = 64                     // a key checked this often in leaseHotPeriod asks for a lease
	leaseHotPeriod = time.Second            // the period of leaseHotChecks
	leaseTarget    = 50 * time.Millisecond  // a grant is sized for this long of the holder's checks
	leaseMinWant   = 16                     // the smallest grant asked for
	leaseIdle      = 250 * time.Millisecond // a lease unused this long is given back
	leaseMaxHeld   = 4096                   // leases a node holds at most
	leaseCallLimit = 5 * time.Second        // bounds a return
	leaseWaits     = 4                      // asks in flight a check waits for before it is forwarded
)

// Methods of HandleCall for leases.
const (
	methodLease       = "lease"
	methodLeaseReturn = "leasereturn"
)

// leaseVerdict is what the lease table says of a check.
type leaseVerdict int8

const (
	leaseNone       leaseVerdict = iota // forward it as usual
	leaseDecided                        // decided under a lease
	leaseDecidedAsk                     // decided under a lease; ask the owner for more, with a peek
	leaseAsk                            // ask the owner for a lease with it
	leaseWait                           // wait for the ask in flight (asked), then use again
)

// leases are the leases a node holds, with the counts of checks that make
// a key hot. Its methods are safe for concurrent use; a nil table holds
// nothing and grants nothing.
type leases struct {
	seed     maphash.Seed
	minLimit int64
	shards   [leaseShards]leaseShard
	held     atomic.Int64
	kick     chan struct{} // wakes the loop that gives back idle leases

	granted     atomic.Int64 // leases this node granted, as owner
	returned    atomic.Int64 // leases this node held whose unused hits it gave back
	expired     atomic.Int64 // leases this node held that ended with hits unused
	expiredHits atomic.Int64 // their unused hits
	hits        atomic.Int64 // checks this node decided under a lease
}

type leaseShard struct {
	mu  sync.Mutex
	m   map[bucket.Key]*lease
	hot [leaseHotSlots]hotCount
	_   [40]byte
}

// hotCount counts the checks of one key (by hash) since a time; keys that
// share a slot reset it.
type hotCount struct {
	h     uint64
	n     uint32
	since time.Time
}

// lease is a slice of a key's allowance that this node holds.
type lease struct {
	p          *policyEntry // the table entry it was granted under
	left       int64        // hits not yet admitted
	until      time.Time    // it ends then (this node's clock)
	ownerUntil int64        // it ends then on the owner's clock (Unix µs), sent back with a return
	limit      int64        // the key's limit
	base       int64        // what remained at the owner, the grant taken
	reset      time.Time    // the counter is full again then
	grant      int64        // the last grant
	used       int64        // hits admitted since the last grant
	since      time.Time    // the last grant, or the entry's start
	lastUse    time.Time
	asking     bool          // a check is asking the owner for a lease
	answered   chan struct{} // closed when the ask in flight is answered (asked)
	retryAt    time.Time     // no asking before then (the last ask got nothing)
}

// newLeases returns a table for keys whose limit is at least minLimit, or
// nil for minLimit < 0.
func newLeases(minLimit int64) *leases {
	if minLimit < 0 {
		return nil
	}
	l := &leases{seed: maphash.MakeSeed(), minLimit: minLimit, kick: make(chan struct{}, 1)}
	for i := range l.shards {
		l.shards[i].m = map[bucket.Key]*lease{}
	}
	return l
}

// eligible reports whether checks of key under p may be leased: a count
// per window, of a limit high enough to share.
func (l *leases) eligible(p *policyEntry, key string) bool {
	if p.Algorithm != bucket.SlidingWindow && p.Algorithm != bucket.FixedWindow {
		return false
	}
	return p.LimitFor(key) >= l.minLimit
}

// use decides a check of hits on key under p at now from a lease, or
// says to forward it, or to ask for a lease with it (then want is the
// grant to ask for, and the caller must report the answer with asked).
func (l *leases) use(p *policyEntry, key string, hits int64, now time.Time) (d Decision, v leaseVerdict, want int64) {
	if l == nil || !l.eligible(p, key) {
		return Decision{}, leaseNone, 0
	}
	k := bucket.Key{Policy: p.Name, ID: key}
	h := maphash.Comparable(l.seed, k)
	sh := &l.shards[h%leaseShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[k]
	if e != nil && e.p != p && !e.asking {
		if sameTerms(e.p, p, key) {
			// A new table (any change, or the first seeded one) that
			// counts this key alike: the lease holds.
			e.p = p
		} else {
			// The key's policy changed: its lease was granted under the
			// old one.
			l.drop(sh, k, e)
			e = nil
		}
	}
	if e != nil {
		if e.left > 0 && !now.Before(e.until) {
			l.expire(e.left)
			e.left = 0
		}
		// Half the last grant used, the next check asks for more while
		// the others go on under what is left; unless, near the slot's
		// end, what is left lasts until then at the rate seen.
		if e.p == p && e.left < e.grant/2 && !e.asking && !now.Before(e.retryAt) {
			want = l.renewal(e, key, now)
		}
		if e.p == p && e.left >= max(hits, 1) {
			// What is left is this node's to admit, even while it asks
			// for more (the owner may have nothing more to give).
			e.left -= hits
			e.used += hits
			e.lastUse = now
			l.hits.Add(1)
			d := Decision{Allowed: true, Limit: e.limit, Remaining: e.base + e.left, ResetAfter: max(0, e.reset.Sub(now))}
			if want > 0 {
				e.asking, e.answered = true, make(chan struct{})
				return d, leaseDecidedAsk, want
			}
			return d, leaseDecided, 0
		}
		if e.asking {
			// The grant in flight is counted at its owner already: a
			// check forwarded now would be denied against hits this
			// node is about to hold, which the end of a stream of
			// checks can leave unused.
			return Decision{}, leaseWait, 0
		}
		if now.Before(e.retryAt) {
			return Decision{}, leaseNone, 0
		}
		if want <= 0 {
			want = l.renewal(e, key, now)
		}
		e.asking, e.answered = true, make(chan struct{})
		return Decision{}, leaseAsk, max(1, want)
	}
	c := &sh.hot[(h/leaseShards)%leaseHotSlots]
	if c.h != h || now.Sub(c.since) > leaseHotPeriod || now.Before(c.since) {
		*c = hotCount{h: h, n: 1, since: now}
		return Decision{}, leaseNone, 0
	}
	c.n++
	if c.n < leaseHotChecks || l.held.Load() >= leaseMaxHeld {
		return Decision{}, leaseNone, 0
	}
	want = min(p.LimitFor(key), rateWant(int64(c.n), now.Sub(c.since)))
	*c = hotCount{}
	sh.m[k] = &lease{p: p, since: now, lastUse: now, asking: true, answered: make(chan struct{})}
	if l.held.Add(1) == 1 {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return Decision{}, leaseAsk, want
}

// renewal is the grant to ask for to renew lease e of key at now: about
// leaseTarget of checks at the rate seen since the last grant, or, when
// the lease ends sooner, what that rate needs until then beyond what is
// left (possibly nothing), so that little is left unused when it ends.
func (l *leases) renewal(e *lease, key string, now time.Time) int64 {
	w := rateWant(e.used, now.Sub(e.since))
	if ttl := e.until.Sub(now); ttl > 0 {
		// Still in the lease's slot: ask for no more than it needs until
		// the slot ends.
		w = min(w, int64(float64(w)*float64(ttl)/float64(leaseTarget))-e.left)
	}
	return min(e.p.LimitFor(key), w)
}

// awaitAsk waits until the ask in flight for the lease of key under p
// is answered, ctx ends or stop closes; it reports whether the answer
// came (or no ask is in flight any more). An ask ends within its
// forward's bound; limit bounds the wait all the same.
func (l *leases) awaitAsk(ctx context.Context, p *policyEntry, key string, limit time.Duration, stop <-chan struct{}) bool {
	k := bucket.Key{Policy: p.Name, ID: key}
	sh := &l.shards[maphash.Comparable(l.seed, k)%leaseShards]
	sh.mu.Lock()
	var ch chan struct{}
	if e := sh.m[k]; e != nil && e.asking {
		ch = e.answered
	}
	sh.mu.Unlock()
	if ch == nil {
		return true
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
	case <-t.C:
	case <-stop:
	}
	return false
}

// expire counts a lease that ended with hits unused.
func (l *leases) expire(hits int64) {
	l.expired.Add(1)
	l.expiredHits.Add(hits)
}

// sameTerms reports whether key is counted alike under a and b: the
// same algorithm, window and limit.
func sameTerms(a, b *policyEntry, key string) bool {
	return a.Algorithm == b.Algorithm && a.Window == b.Window && a.LimitFor(key) == b.LimitFor(key)
}

// rateWant sizes a grant for leaseTarget of checks at the rate of n in
// elapsed.
func rateWant(n int64, elapsed time.Duration) int64 {
	if elapsed < time.Millisecond {
		elapsed = time.Millisecond
	}
	return max(leaseMinWant, int64(float64(n)*float64(leaseTarget)/float64(elapsed)))
}

// drop removes the lease e of k from sh, whose lock is held.
func (l *leases) drop(sh *leaseShard, k bucket.Key, e *lease) {
	if e.left > 0 {
		l.expire(e.left)
	}
	delete(sh.m, k)
	l.held.Add(-1)
}

// leaseRes is the owner's answer to a check that asks for a lease: the
// check's decision, and a grant of Grant hits that ends in TTL (Until on
// the owner's clock).
type leaseRes struct {
	OK         bool          `msgpack:"ok"` // false: the node does not own the key, or cannot decide; forward the check
	Allowed    bool          `msgpack:"a"`
	Limit      int64         `msgpack:"l"`
	Remaining  int64         `msgpack:"r"`
	ResetAfter time.Duration `msgpack:"ra"`
	RetryAfter time.Duration `msgpack:"ry"`
	Grant      int64         `msgpack:"g,omitempty"`
	Base       int64         `msgpack:"b,omitempty"` // remaining at the owner, the grant taken
	TTL        time.Duration `msgpack:"t,omitempty"`
	Until      int64         `msgpack:"u,omitempty"`
}

func (r leaseRes) decision() Decision {
	return Decision{Allowed: r.Allowed, Limit: r.Limit, Remaining: r.Remaining, ResetAfter: r.ResetAfter, RetryAfter: r.RetryAfter}
}

// asked records the owner's answer to an ask for a lease of key under p
// made at start (this node's clock, read before the ask was sent, so that
// the lease ends here no later than at the owner); res is the zero value
// when the ask failed.
func (l *leases) asked(p *policyEntry, key string, res leaseRes, start, now time.Time) {
	k := bucket.Key{Policy: p.Name, ID: key}
	sh := &l.shards[maphash.Comparable(l.seed, k)%leaseShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[k]
	if e == nil || e.p != p {
		if res.Grant > 0 {
			l.expire(res.Grant) // granted under a policy since changed: left to expire at the owner
		}
		return
	}
	e.asking = false
	if e.answered != nil {
		close(e.answered)
		e.answered = nil
	}
	if res.Grant <= 0 {
		e.retryAt = now.Add(leaseTarget)
		return
	}
	if e.left > 0 && (e.ownerUntil != res.Until || !now.Before(e.until)) {
		l.expire(e.left)
		e.left = 0
	}
	e.left += res.Grant
	e.grant = res.Grant
	e.ownerUntil = res.Until
	e.until = start.Add(res.TTL)
	e.limit, e.base = res.Limit, res.Base
	e.reset = start.Add(res.ResetAfter)
	e.used, e.since, e.lastUse = 0, now, now
}

// returnable is the unused part of a lease, to give back to the owner.
type returnable struct {
	k     bucket.Key
	hits  int64
	until int64 // the lease's end on the owner's clock
}

// collect removes the leases that ended and, with all or for those unused
// since leaseIdle, those still running, and returns the unused hits of
// the latter, to give back.
func (l *leases) collect(now time.Time, all bool) []returnable {
	if l == nil {
		return nil
	}
	var out []returnable
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			switch {
			case e.asking:
			case !now.Before(e.until) && !now.Before(e.retryAt):
				l.drop(sh, k, e)
			case all || now.Sub(e.lastUse) >= leaseIdle:
				if e.left > 0 && now.Before(e.until) {
					out = append(out, returnable{k: k, hits: e.left, until: e.ownerUntil})
					e.left = 0
				}
				l.drop(sh, k, e)
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// leaseEnd is when a lease granted under p at now ends (Unix µs): the end
// of the current slot of a sliding window, or of the current fixed window.
func leaseEnd(p bucket.Policy, now time.Time) int64 {
	width := p.Window.Microseconds()
	if p.Algorithm == bucket.SlidingWindow {
		width /= bucket.Slots
	}
	t := now.UnixMicro()
	start := t - ((t%width)+width)%width
	return start + width
}

// grantLease decides a check of hits on k under p at now in store and,
// if it passes, grants a lease of about want hits: at most what then
// remains divided by twice members, scaled down when less than leaseTarget
// of the slot is left. changed reports whether the counter changed.
func grantLease(ctx context.Context, store bucket.Store, p *policyEntry, k bucket.Key, hits, want int64, members int, now time.Time) (res leaseRes, changed bool, err error) {
	d, err := store.Take(ctx, k, p.Policy, hits, now)
	if err != nil {
		return leaseRes{}, false, err
	}
	res = leaseRes{OK: true, Allowed: d.Allowed, Limit: d.Limit, Remaining: d.Remaining, ResetAfter: d.ResetAfter, RetryAfter: d.RetryAfter}
	changed = d.Allowed && hits > 0
	if !d.Allowed || want <= 0 || (p.Algorithm != bucket.SlidingWindow && p.Algorithm != bucket.FixedWindow) {
		return res, changed, nil
	}
	until := leaseEnd(p.Policy, now)
	ttl := time.Duration(until-now.UnixMicro()) * time.Microsecond
	if ttl < leaseTarget {
		want = int64(float64(want) * float64(ttl) / float64(leaseTarget))
	}
	g := min(want, d.Remaining/int64(2*max(members, 1)))
	if g < 1 {
		return res, changed, nil
	}
	dl, err := store.Take(ctx, k, p.Policy, g, now)
	if err != nil || !dl.Allowed {
		return res, changed, nil // another check took it meanwhile
	}
	res.Grant, res.Base, res.TTL, res.Until = g, dl.Remaining, ttl, until
	res.ResetAfter = max(res.ResetAfter, dl.ResetAfter)
	return res, true, nil
}

// returnLease gives back hits of a lease that ends at until (Unix µs) to
// k's counter in store, while that is still the current slot: until then
// they are the newest hits the counter holds, and a refund takes the
// newest first. Later they are left to leave with their slot. It reports
// whether it gave them back.
func returnLease(ctx context.Context, store bucket.Store, p *policyEntry, k bucket.Key, hits, until int64, now time.Time) bool {
	r, ok := store.(bucket.Refunder)
	if !ok || hits <= 0 || now.UnixMicro() >= until || leaseEnd(p.Policy, now) != until {
		return false
	}
	_, err := r.Refund(ctx, k, p.Policy, hits, now)
	return err == nil
}

// leaseReq is a check that asks its owner for a lease (Want > 0), or
// (Return) the unused hits of a lease that ends at Until.
type leaseReq struct {
	Policy string `msgpack:"p"`
	Key    string `msgpack:"k"`
	Hits   int64  `msgpack:"h"`
	Want   int64  `msgpack:"w,omitempty"`
	Until  int64  `msgpack:"u,omitempty"`
}

// answerHere answers a check of a key that a peer owns without
// forwarding it, when it can: from a lease, from a cached denial, or by
// asking the owner for a lease with it. ok is false when the check is to
// be forwarded as usual.
func (n *Node) answerHere(ctx context.Context, p *policyEntry, key string, hits int64, rt *routeTable, owner, addr string, now time.Time) (Decision, bool) {
	d, v, want := n.leases.use(p, key, hits, now)
	for tries := 0; v == leaseWait && tries < leaseWaits; tries++ {
		if !n.leases.awaitAsk(ctx, p, key, n.cfg.FailoverTimeout, n.stop) {
			break
		}
		now = n.clock.Now()
		d, v, want = n.leases.use(p, key, hits, now)
	}
	switch v {
	case leaseDecided:
		return d, true
	case leaseDecidedAsk:
		if n.denyCache.covers(p, key, now) {
			n.leases.asked(p, key, leaseRes{}, now, now) // the owner has nothing to give
		} else {
			n.askLease(ctx, p, key, 0, want, rt, owner, addr, now)
		}
		return d, true
	}
	if d, ok := n.denyCache.lookup(p, key, hits, now); ok {
		if v == leaseAsk {
			n.leases.asked(p, key, leaseRes{}, now, now)
		}
		return d, true
	}
	if v == leaseAsk {
		return n.askLease(ctx, p, key, hits, want, rt, owner, addr, now)
	}
	return Decision{}, false
}

// answerHereLater is answerHere for a check of a batch decided under the
// lock of local decisions, where no network call may wait: it answers
// from a lease or a cached denial, or says (want > 0) that the check is to
// ask the owner for a lease once the lock is released (sendLeaseAsks): with
// ok, as a peek, the check being decided.
func (n *Node) answerHereLater(p *policyEntry, key string, hits int64, now time.Time) (d Decision, ok bool, want int64) {
	// leaseWait: no wait under the lock; the check is forwarded.
	d, v, want := n.leases.use(p, key, hits, now)
	switch v {
	case leaseDecided:
		return d, true, 0
	case leaseDecidedAsk:
		if n.denyCache.covers(p, key, now) {
			n.leases.asked(p, key, leaseRes{}, now, now)
			return d, true, 0
		}
		return d, true, max(want, 1)
	}
	if d, ok := n.denyCache.lookup(p, key, hits, now); ok {
		if v == leaseAsk {
			n.leases.asked(p, key, leaseRes{}, now, now)
		}
		return d, true, 0
	}
	if v == leaseAsk {
		return Decision{}, false, max(want, 1)
	}
	return Decision{}, false, 0
}

// leaseAskItem is a check of a batch that asks its owner for a lease.
type leaseAskItem struct {
	i           int // the check's index
	want        int64
	owner, addr string
	peek        bool // the check is decided: ask with a peek
}

// sendLeaseAsks sends the batch's checks that ask for a lease; those the
// owner did not decide join remote, to be forwarded as usual.
func (n *Node) sendLeaseAsks(ctx context.Context, asks []leaseAskItem, checks []Request, entries []*policyEntry, rt *routeTable, now time.Time, out []Result, remote map[string][]int) {
	for _, a := range asks {
		c := checks[a.i]
		if a.peek {
			n.askLease(ctx, entries[a.i], c.Key, 0, a.want, rt, a.owner, a.addr, now)
			continue
		}
		if d, ok := n.askLease(ctx, entries[a.i], c.Key, c.Hits, a.want, rt, a.owner, a.addr, now); ok {
			out[a.i] = Result{Decision: d}
			continue
		}
		remote[a.owner] = append(remote[a.owner], a.i)
	}
}

// askLease sends a check of key to its owner with an ask for a lease of
// want hits, and returns the owner's decision; ok is false when the owner
// did not decide it (the caller forwards it as usual).
func (n *Node) askLease(ctx context.Context, p *policyEntry, key string, hits, want int64, rt *routeTable, owner, addr string, now time.Time) (Decision, bool) {
	var res leaseRes
	body, err := msgpack.Marshal(leaseReq{Policy: p.Name, Key: key, Hits: hits, Want: want})
	if err == nil {
		fctx, done := n.forwardCtx(ctx, rt, owner)
		body, err = n.tr.Call(fctx, addr, methodLease, body)
		done()
	}
	if err == nil && !msgpackfit.Fits(body) {
		err = errLengthBeyondEnd
	}
	if err == nil {
		err = msgpack.Unmarshal(body, &res)
	}
	if err != nil || !res.OK {
		n.leases.asked(p, key, leaseRes{}, now, n.clock.Now())
		return Decision{}, false
	}
	n.leases.asked(p, key, res, now, n.clock.Now())
	d := res.decision()
	n.denyCache.store(p, key, hits, d, now)
	return d, true
}

// errLeaseRefused: a lease request or return that fails validation.
var errLeaseRefused = errors.New("cluster: lease request refused")

// receiveLease serves a check that asks for a lease, and a lease's
// return.
func (n *Node) receiveLease(ctx context.Context, method string, body []byte) ([]byte, error) {
	var req leaseReq
	err := errLengthBeyondEnd
	if msgpackfit.Fits(body) {
		err = msgpack.Unmarshal(body, &req)
	}
	if err != nil {
		n.warnings.Log("refused a malformed lease request", "err", err)
		return nil, fmt.Errorf("%w: %v", errLeaseRefused, err)
	}
	p, err := n.checkInput(*n.policies.Load(), req.Policy, req.Key, req.Hits)
	if err == nil && (req.Want < 0 || req.Want > p.Capacity()) {
		err = fmt.Errorf("want %d, at most %d", req.Want, p.Capacity())
	}
	if err != nil {
		n.warnings.Log("refused a lease request", "policy", req.Policy, "err", err)
		return nil, fmt.Errorf("%w: %w", errLeaseRefused, err)
	}
	if method == methodLeaseReturn && req.Hits > p.Capacity() {
		return nil, fmt.Errorf("%w: returns %d hits, more than the capacity %d", errLeaseRefused, req.Hits, p.Capacity())
	}
	k := bucket.Key{Policy: req.Policy, ID: req.Key}
	if n.leases == nil || !n.partitioned || n.gossip == nil || n.leaving.Load() {
		return msgpack.Marshal(leaseRes{})
	}
	// As a forwarded check is: under the lock of local decisions, and only
	// if this node decides the key now (no hand-over of it in flight);
	// else the asker forwards its check as usual.
	n.copyMu.RLock()
	rt := n.route.Load()
	if rt == nil || (!n.ho.established.Load() && rt.ring.Len() <= 1) {
		n.copyMu.RUnlock()
		return msgpack.Marshal(leaseRes{})
	}
	var buf [128]byte
	enc, _ := k.AppendBinary(buf[:0])
	if owner, _, wait := n.where(rt, enc, true); owner != rt.self || wait != nil {
		n.copyMu.RUnlock()
		return msgpack.Marshal(leaseRes{})
	}
	now := n.clock.Now()
	if method == methodLeaseReturn {
		given := returnLease(ctx, n.store, p, k, req.Hits, req.Until, now)
		n.copyMu.RUnlock()
		if given {
			n.markChanged(k)
		}
		return nil, nil
	}
	if n.copyFailing(k) {
		// The counter's copies do not reach its successor: the asker
		// forwards its check, decided as any check of the key now is.
		n.copyMu.RUnlock()
		return msgpack.Marshal(leaseRes{})
	}
	res, changed, err := grantLease(ctx, n.store, p, k, req.Hits, req.Want, rt.ring.Len(), now)
	n.copyMu.RUnlock()
	if err != nil {
		return msgpack.Marshal(leaseRes{})
	}
	if changed && n.repl != nil {
		// A grant is a change outside a check: listed at once, whatever
		// CopyEvery counted.
		n.markChanged(k)
		if res.Grant > 0 || p.Replication == bucket.ReplicateSync {
			// The successor must count the slice before the holder uses
			// it: if this node crashed first, the slice would be free
			// again there while the holder admits from it.
			if !n.waitCopied(ctx) {
				res = n.uncopiedLease(ctx, p, k, req.Hits, res, now)
			}
		}
	}
	if res.Grant > 0 {
		n.leases.granted.Add(1)
	}
	return msgpack.Marshal(res)
}

// uncopiedLease is the answer to an ask whose changes did not reach the
// key's successor: no lease (the slice is given back to the counter), and
// the check decided as a check whose copy failed is (see Node.stored).
func (n *Node) uncopiedLease(ctx context.Context, p *policyEntry, k bucket.Key, hits int64, res leaseRes, now time.Time) leaseRes {
	if res.Grant > 0 {
		n.copyMu.RLock()
		returnLease(ctx, n.store, p, k, res.Grant, res.Until, n.clock.Now())
		n.copyMu.RUnlock()
		res.Grant, res.Base, res.TTL, res.Until = 0, 0, 0, 0
	}
	if !res.Allowed || hits <= 0 {
		return res
	}
	d, err := n.fallback(ctx, p, k.ID, hits, now, n.liveNodes(), errNotCopied)
	if err != nil {
		return leaseRes{} // the asker forwards its check
	}
	return leaseRes{OK: true, Allowed: d.Allowed, Limit: d.Limit, Remaining: d.Remaining, ResetAfter: d.ResetAfter, RetryAfter: d.RetryAfter}
}

// leaseLoop gives back the leases unused for leaseIdle and drops ended
// ones; it sleeps while the node holds none.
func (n *Node) leaseLoop() {
	defer n.wg.Done()
	l := n.leases
	t := time.NewTimer(leaseIdle)
	t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-l.kick:
		}
		for l.held.Load() > 0 {
			t.Reset(leaseIdle)
			select {
			case <-n.stop:
				t.Stop()
				return
			case <-t.C:
			}
			n.returnLeases(n.life, false)
		}
	}
}

// returnLeases gives back the unused hits of leases that are idle, or of
// all with all (on Leave), to their keys' owners.
func (n *Node) returnLeases(ctx context.Context, all bool) {
	rs := n.leases.collect(n.clock.Now(), all)
	rt := n.route.Load()
	if len(rs) == 0 || rt == nil {
		return
	}
	// One bound for all: a leave does not wait on each dead owner in turn.
	cctx, cancel := context.WithTimeout(ctx, leaseCallLimit)
	defer cancel()
	for _, r := range rs {
		owner, addr := rt.owner(r.k)
		if owner == "" || owner == rt.self {
			continue
		}
		body, err := msgpack.Marshal(leaseReq{Policy: r.k.Policy, Key: r.k.ID, Hits: r.hits, Until: r.until})
		if err != nil {
			continue
		}
		_, err = n.tr.Call(cctx, addr, methodLeaseReturn, body)
		if err != nil {
			n.warnings.Log("giving back a lease failed; its hits stay counted until their slot ends", "owner", owner, "hits", r.hits, "err", err)
			continue
		}
		n.leases.returned.Add(1)
	}
}

// register exports the lease counts.
func (l *leases) register(m *metrics) {
	if l == nil || m == nil || m.reg == nil {
		return
	}
	for _, col := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "ratelimit", Name: "leases_held",
			Help: "Leases of hot keys' allowance this node holds, to admit their checks without forwarding them.",
		}, func() float64 { return float64(l.held.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "leases_granted_total",
			Help: "Leases this node granted, as the owner of their keys, to nodes that check them often.",
		}, func() float64 { return float64(l.granted.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "leases_returned_total",
			Help: "Leases this node held whose unused hits it gave back to the key's owner (refunded there while the lease's slot is still current).",
		}, func() float64 { return float64(l.returned.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "leases_expired_total",
			Help: "Leases this node held that ended with hits unused and not given back (they stay counted until their slot leaves the window).",
		}, func() float64 { return float64(l.expired.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "lease_hits_expired_total",
			Help: "Unused hits of the leases counted in leases_expired_total: admitted by nobody, they are what leases cost in under-admission.",
		}, func() float64 { return float64(l.expiredHits.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "lease_checks_total",
			Help: "Checks this node decided under a lease, without forwarding them to the key's owner.",
		}, func() float64 { return float64(l.hits.Load()) }),
	} {
		if err := m.reg.Register(col); err == nil {
			m.cols = append(m.cols, col)
		}
	}
}
