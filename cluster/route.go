package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/internal/msgpackenc"
	"github.com/vibewell/ratelimit/transport"
)

// forward sends a check to the peer that owns its key and waits for its
// answer: a slow owner is not a dead one, and any other node deciding the
// check meanwhile could admit beyond the limit. The wait ends early only
// when the owner refuses the connection (or answers that it cannot decide)
// or membership drops it from the ring; else it lasts up to
// FailoverTimeout. In those cases, and only then, the key's successor
// decides (see failover).
func (n *Node) forward(ctx context.Context, p *policyEntry, key string, hits int64, rt *routeTable, owner, addr string, now time.Time) (Decision, error) {
	if d, ok := n.answerHere(ctx, p, key, hits, rt, owner, addr, now); ok {
		return d, nil
	}
	fctx, done := n.forwardCtx(ctx, rt, owner)
	start := time.Now()
	res, err := n.tr.Check(fctx, addr, transport.CheckItem{Policy: p.Name, Key: key, Hits: hits})
	// An owner that answers but cannot decide now (it holds the check
	// for a hand-over past its wait, or is closing) is alive: it is asked
	// again while it stays in the ring, up to FailoverTimeout. Its
	// successor need not hold a copy of the key when the ring is
	// changing, and would decide from nothing.
	// So is one whose dial timed out (slowPeer), while this node's ring
	// holds it as the same process.
	for wait := 5 * time.Millisecond; (err == nil && res.Status == transport.StatusUnavailable || slowPeer(err) && n.sameMember(rt, owner)) && time.Since(start) < n.cfg.FailoverTimeout; wait = min(2*wait, 200*time.Millisecond) {
		select {
		case <-fctx.Done():
		case <-n.stop:
		case <-time.After(wait):
			res, err = n.tr.Check(fctx, addr, transport.CheckItem{Policy: p.Name, Key: key, Hits: hits})
			continue
		}
		break
	}
	done()
	if took := time.Since(start); took > n.cfg.ForwardTimeout {
		n.warnings.Log("a forwarded check took longer than ForwardTimeout; it waited for its owner", "owner", owner, "took", took, "err", err)
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return Decision{}, cerr
		}
		return n.failover(ctx, p, key, hits, rt, owner, now, fmt.Errorf("%w: %s: %w", ErrOwnerUnavailable, addr, err))
	}
	switch res.Status {
	case transport.StatusOK:
		d := fromWire(res)
		n.denyCache.store(p, key, hits, d, now)
		return d, nil
	case transport.StatusBadRequest:
		return Decision{}, fmt.Errorf("%w: refused by its owner", ErrInvalidKey)
	default:
		return n.failover(ctx, p, key, hits, rt, owner, now, fmt.Errorf("%w: %s answered %s", ErrOwnerUnavailable, addr, res.Status))
	}
}

// slowPeer reports whether err says that a peer could not be reached in
// time (a dial or its TLS handshake timed out, or the reconnect back-off
// after one): on a starved machine a live owner does that, so it is not
// taken for gone. A refused connection, or any other failure, is.
func slowPeer(err error) bool {
	var ne net.Error
	return errors.Is(err, transport.ErrUnreachable) && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout())
}

// sameMember reports whether this node's current ring holds member as the
// process rt's ring held: not dropped, not back as a new process.
func (n *Node) sameMember(rt *routeTable, member string) bool {
	cur := n.route.Load()
	return cur != nil && cur.ring.Has(member) && cur.epochs[member] == rt.epochs[member]
}

// forwardCtx returns the context a forward to owner waits under: ctx,
// ended also when membership drops owner, and at FailoverTimeout. A ctx
// that cannot end costs nothing here: the member's own context serves,
// and the transport's call timeout (FailoverTimeout) bounds the wait.
func (n *Node) forwardCtx(ctx context.Context, rt *routeTable, owner string) (context.Context, func()) {
	up := rt.upCtx(owner)
	dl, hasDL := ctx.Deadline()
	if ctx.Done() == nil && n.ownTransport {
		return up, func() {}
	}
	var cancel context.CancelFunc
	if !hasDL || time.Until(dl) > n.cfg.FailoverTimeout {
		ctx, cancel = context.WithTimeout(ctx, n.cfg.FailoverTimeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	stop := context.AfterFunc(up, cancel)
	return ctx, func() { stop(); cancel() }
}

// Methods of HandleCall.
const (
	methodHandoff  = "handoff"
	methodFailover = "failover"
	methodFoldBack = "foldback"
)

// errNotCopied is the cause logged when a check was allowed on its
// owner's counter but the copy of the change did not reach the successor
// (a sync policy's), or the last round of copies to it did not (an async
// one's): the failure mode decides the check instead. The hit stays
// counted, so this only ever makes the limit stricter on this node; it
// bounds what a node cut off from the others admits while they decide
// its keys from their copies.
var errNotCopied = fmt.Errorf("%w: the copies of its changes do not reach its successor", ErrOwnerUnavailable)

// minorityErr is the cause logged when a node on the small side of a
// partition decides a check by the failure mode.
func (rt *routeTable) minorityErr() error {
	return fmt.Errorf("%w: this node reaches %d of the %d members it knows", ErrOwnerUnavailable, rt.ring.Len(), rt.known)
}

// failover decides a check whose owner cannot answer: the key's
// successor, which holds the copy of its counter, decides against the copy
// and counts in it (this node, if it is the successor). Only when the
// successor cannot answer either does the policy's failure mode decide.
func (n *Node) failover(ctx context.Context, p *policyEntry, key string, hits int64, rt *routeTable, owner string, now time.Time, cause error) (Decision, error) {
	k := bucket.Key{Policy: p.Name, ID: key}
	succ, addr := n.successor(rt, k, owner)
	n.warnings.Log("owner unreachable; its successor decides", "policy", p.Name, "owner", owner, "successor", succ, "err", cause)
	switch {
	case succ == rt.self:
		if d, ok := n.decideOnCopy(ctx, p, k, hits, now); ok {
			n.metrics.fallback(p.Name, "successor")
			return d, nil
		}
	case succ != "":
		cctx, cancel := context.WithTimeout(ctx, n.cfg.FailoverTimeout)
		body, err := msgpack.Marshal(failoverReq{Policy: p.Name, Key: key, Hits: hits})
		if err == nil {
			body, err = n.tr.Call(cctx, addr, methodFailover, body)
		}
		cancel()
		var res failoverRes
		if err == nil {
			err = msgpack.Unmarshal(body, &res)
		}
		if err == nil && res.OK {
			n.metrics.fallback(p.Name, "successor")
			return res.decision(), nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return Decision{}, cerr
		}
		cause = fmt.Errorf("%w; its successor %s: %v", cause, succ, err)
	}
	return n.fallback(ctx, p, key, hits, now, max(rt.known, rt.ring.Len()), cause)
}

// fallback decides a check whose counter cannot be reached (its owner, or
// the store's backend) by the policy's failure mode.
func (n *Node) fallback(ctx context.Context, p *policyEntry, key string, hits int64, now time.Time, live int, cause error) (Decision, error) {
	n.metrics.fallback(p.Name, p.FailureMode.String())
	n.warnings.Log("counter unreachable; failure mode decides", "policy", p.Name, "mode", p.FailureMode.String(), "err", cause)
	capacity := p.Capacity()
	switch p.FailureMode {
	case bucket.FailOpen:
		return Decision{Allowed: true, Limit: capacity, Remaining: max(0, capacity-hits)}, nil
	case bucket.FailClosed:
		return Decision{Limit: capacity, ResetAfter: time.Second, RetryAfter: time.Second}, nil
	}
	// FailLocal: this node alone enforces its share of the limit.
	q := p.Policy
	live = max(live, 1)
	q.Limit = max(1, q.LimitFor(key)/int64(live))
	q.Burst /= int64(live)
	q.Overrides = nil
	if q.Algorithm == bucket.GCRA || q.Algorithm == bucket.TokenBucket {
		q.Limit = min(q.Limit, q.Window.Microseconds())
	}
	return n.local.Take(ctx, bucket.Key{Policy: p.Name, ID: key}, q, hits, now)
}

func fromWire(r transport.CheckResult) Decision {
	return Decision{Allowed: r.Allowed, Limit: r.Limit, Remaining: r.Remaining, ResetAfter: r.ResetAfter, RetryAfter: r.RetryAfter}
}

func toWire(d Decision) transport.CheckResult {
	return transport.CheckResult{Status: transport.StatusOK, Allowed: d.Allowed, Limit: d.Limit, Remaining: d.Remaining, ResetAfter: d.ResetAfter, RetryAfter: d.RetryAfter}
}

// peerHandler serves the requests peers send to this node.
type peerHandler struct{ n *Node }

// HandleChecks decides checks forwarded by peers. Those of keys this node
// no longer decides (a leaving node's, or keys it has just handed over)
// are passed on to the node that does; those of keys being handed over
// to it wait for the hand-over (see handover.go).
func (h peerHandler) HandleChecks(ctx context.Context, items []transport.CheckItem, results []transport.CheckResult) {
	n := h.n
	n.ho.inflight.Add(1)
	defer n.ho.inflight.Add(-1)
	if n.closed.Load() || n.ho.draining.Load() {
		// A closing node decides nothing more (it owns nothing since
		// its hand-over): the sender's failover finds the new owner.
		for i := range results {
			results[i] = transport.CheckResult{Status: transport.StatusUnavailable}
		}
		return
	}
	table := *n.policies.Load()
	var moved map[string][]int // checks to pass on, by node
	changed, sync := false, false
	var synced []int // allowed checks of sync policies
	var (
		idx      []int // the checks still to decide; nil: all
		deadline time.Time
		late     bool
	)
	for {
		now := n.clock.Now()
		var held []int
		var wait <-chan struct{}
		v := n.ho.ver.Load()
		n.copyMu.RLock()
		rt := n.route.Load()
		count := len(items)
		if idx != nil {
			count = len(idx)
		}
		for j := range count {
			i := j
			if idx != nil {
				i = idx[j]
			}
			it := &items[i]
			p := table[it.Policy]
			switch {
			case p == nil:
				results[i] = transport.CheckResult{Status: transport.StatusUnknownPolicy}
				continue
			case len(it.Key) == 0 || len(it.Key) > n.cfg.MaxKeyLen || it.Hits < 0 || it.Hits > n.cfg.MaxHits:
				results[i] = transport.CheckResult{Status: transport.StatusBadRequest}
				continue
			}
			k := bucket.Key{Policy: it.Policy, ID: it.Key}
			if rt != nil && rt.minority {
				d, _ := n.fallback(ctx, p, it.Key, it.Hits, now, rt.known, rt.minorityErr())
				results[i] = toWire(d)
				continue
			}
			if n.partitioned && n.gossip != nil {
				if rt == nil {
					// A peer routes here before this node has the ring.
					if !late {
						held = append(held, i)
						wait = waitChange
						continue
					}
				} else {
					var buf [128]byte
					enc, _ := k.AppendBinary(buf[:0])
					owner, addr, w := n.where(rt, enc, true)
					if w != nil && !late {
						held = append(held, i)
						wait = w
						continue
					}
					if owner != rt.self {
						gave := n.leaving.Load() || (rt.prev != nil && rt.prev.Owner(enc) == rt.self)
						if !gave && !late {
							// The sender's ring gives the key to this
							// node and this node's does not: one of the
							// two is behind. Deciding now could decide
							// beside the owner this node knows; wait for
							// this node's ring, or that owner's
							// hand-over, to catch up.
							held = append(held, i)
							wait = waitChange
							continue
						}
						if !gave && n.replicas != nil {
							// A peer whose ring already dropped a failed
							// owner sends its checks here, the new owner,
							// before this node's ring has dropped it: they
							// are decided on the copy, as the failover
							// checks of the other peers are.
							if succ, _ := n.successor(rt, k, owner); succ == rt.self {
								d, _ := n.decideOnCopyLocked(ctx, p, k, it.Hits, now)
								results[i] = toWire(d)
								continue
							}
						}
						if gave {
							if moved == nil {
								moved = map[string][]int{}
							}
							moved[addr] = append(moved[addr], i)
							continue
						}
					}
				}
			}
			d, err := n.store.Take(ctx, k, p.Policy, it.Hits, now)
			if err != nil {
				results[i] = transport.CheckResult{Status: transport.StatusUnavailable}
				continue
			}
			if d.Allowed && it.Hits > 0 && p.Replication != bucket.ReplicateSync && n.copyFailing(k) {
				d, _ = n.fallback(ctx, p, it.Key, it.Hits, now, n.liveNodes(), errNotCopied)
			}
			if d.Allowed && it.Hits > 0 {
				changed = true
				if p.Replication == bucket.ReplicateSync {
					sync = true
					synced = append(synced, i)
				}
			}
			results[i] = toWire(d)
		}
		n.copyMu.RUnlock()
		if len(held) == 0 {
			break
		}
		idx = held
		if deadline.IsZero() {
			deadline = time.Now().Add(handoverWait)
		}
		if !n.ho.awaitChange(ctx, wait, v, deadline) {
			if ctx.Err() != nil {
				for _, i := range held {
					results[i] = transport.CheckResult{Status: transport.StatusUnavailable}
				}
				break
			}
			late = true
			n.metrics.handoverLate.Add(float64(len(held)))
			n.warnings.Log("forwarded checks waited handoverWait for a hand-over; decided as the tables say", "checks", len(held))
		}
	}
	if n.repl != nil && changed {
		// One wait for the whole batch: its changes leave in one round
		// (async ones as the store lists them: see changeTracker).
		if sync {
			if !n.waitCopied(ctx) {
				// The copies did not reach the successor: the sync
				// policies' checks are decided by the failure mode.
				now := n.clock.Now()
				for _, i := range synced {
					d, _ := n.fallback(ctx, table[items[i].Policy], items[i].Key, items[i].Hits, now, n.liveNodes(), errNotCopied)
					results[i] = toWire(d)
				}
			}
		}
	}
	for addr, idx := range moved {
		n.passOn(ctx, addr, items, idx, results)
	}
}

// passOn sends the checks at idx to their new owner at addr in one message:
// a leaving node's answer to peers that still route to it.
func (n *Node) passOn(ctx context.Context, addr string, items []transport.CheckItem, idx []int, results []transport.CheckResult) {
	fwd := make([]transport.CheckItem, len(idx))
	res := make([]transport.CheckResult, len(idx))
	for j, i := range idx {
		fwd[j] = items[i]
	}
	err := n.tr.CheckMany(ctx, addr, fwd, res)
	for j, i := range idx {
		if err != nil {
			res[j] = transport.CheckResult{Status: transport.StatusUnavailable}
		}
		results[i] = res[j]
	}
}

// HandleCall serves calls off the check path: counter hand-off, copies,
// fail-over, fold-back, refunds and policy writes.
func (h peerHandler) HandleCall(ctx context.Context, method string, body []byte) ([]byte, error) {
	h.n.ho.inflight.Add(1)
	defer h.n.ho.inflight.Add(-1)
	switch method {
	case methodHandover:
		return nil, h.n.receiveHandover(ctx, body)
	case methodHandoff:
		return h.n.receiveHandoff(ctx, body)
	case methodTopDenied:
		return h.n.serveTopDenied(body)
	case methodCounts:
		return h.n.serveCounts()
	case methodReplica:
		return nil, h.n.receiveReplica(ctx, body)
	case methodRefund:
		return h.n.receiveRefund(ctx, body)
	case methodFailover:
		return h.n.receiveFailover(ctx, body)
	case methodFoldBack:
		return nil, h.n.receiveFoldBack(ctx, body)
	case methodLease, methodLeaseReturn:
		return h.n.receiveLease(ctx, method, body)
	case methodPolicyApply:
		if h.n.raft == nil {
			return nil, errors.New("cluster: this node keeps no replicated policy table")
		}
		return h.n.raft.handlePolicyApply(ctx, body)
	}
	return nil, fmt.Errorf("cluster: unknown method %q", method)
}

// handoffStore is a Store whose counters can move between nodes; the
// memory store is one. A store shared by all nodes (Redis) needs no
// hand-off.
type handoffStore interface {
	Range(now time.Time, fn func(k bucket.Key, st bucket.State) bool)
	Merge(k bucket.Key, p bucket.Policy, st bucket.State, now time.Time)
	Delete(k bucket.Key)
}

// handoffMsg carries counters to their new owner.
type handoffMsg struct {
	// From is the sender's node name, checked against the ring.
	From    string        `msgpack:"f,omitempty"`
	Version uint8         `msgpack:"v"`
	Items   []handoffItem `msgpack:"i"`
}

type handoffItem struct {
	Policy string                   `msgpack:"p"`
	Key    string                   `msgpack:"k"`
	T      int64                    `msgpack:"t"`
	Count  [bucket.Slots + 1]uint32 `msgpack:"c"`
	Idle   uint32                   `msgpack:"e"`
	Span   uint32                   `msgpack:"s,omitempty"`
}

// handoffChunk bounds the counters of one hand-off call, and
// handoffTimeout its time.
const (
	handoffChunk   = 2000
	handoffTimeout = 5 * time.Second
)

// handOff sends the counters that rt assigns to other members to them,
// where they merge (the more consumed state wins). With drop, counters that
// reached their new owner are deleted here. It returns how many it sent.
func (n *Node) handOff(ctx context.Context, rt *routeTable, drop bool) int {
	hs, ok := n.store.(handoffStore)
	if !ok || rt == nil || rt.ring.Len() == 0 {
		return 0
	}
	groups := map[string][]handoffItem{}
	hs.Range(n.clock.Now(), func(k bucket.Key, st bucket.State) bool {
		if owner, _ := rt.owner(k); owner != rt.self && owner != "" {
			groups[owner] = append(groups[owner], itemOf(k, st))
		}
		return true
	})
	total := 0
	for owner, items := range groups {
		sent, err := n.sendCounters(ctx, rt.addrs[owner], methodHandoff, items, handoffTimeout, func(chunk []handoffItem, answer []byte) {
			if drop {
				n.dropHandedOff(hs, rt, owner, chunk, answer)
			}
		})
		total += sent
		if err != nil {
			n.log.Warn("hand-off failed; counters stay here", "to", owner, "counters", len(items)-sent, "err", err)
		}
	}
	if total > 0 {
		n.metrics.handedOff.Add(float64(total))
		n.log.Info("handed off counters", "counters", total, "owners", len(groups))
	}
	return total
}

// dropHandedOff deletes the counters of chunk that reached their new
// owner; those whose successor this node is stay as copies, so that a
// check this node decides for the owner while it cannot answer starts
// from them (the owner's own copies replace them once it sends some).
// Those the owner refused (answer: see refusedOf) stay here: its ring
// names another member, and this node's next ring change sends them on.
func (n *Node) dropHandedOff(hs handoffStore, rt *routeTable, owner string, chunk []handoffItem, answer []byte) {
	table := *n.policies.Load()
	keep, err := refusedOf(answer, len(chunk))
	if err != nil {
		n.log.Warn("a hand-off's answer is unreadable; its counters stay here", "to", owner, "counters", len(chunk), "err", err)
		return
	}
	if refused := countTrue(keep); refused > 0 {
		n.log.Warn("the new owner's ring names another owner for some counters; they stay here until this node's ring changes", "to", owner, "counters", refused)
	}
	for i := range chunk {
		if keep[i] {
			continue
		}
		k := chunk[i].key()
		if n.replicas != nil {
			if succ, _ := n.successor(rt, k, owner); succ == rt.self {
				if p := table[k.Policy]; p != nil {
					n.replicas.Merge(k, p.Policy, chunk[i].state(), n.clock.Now())
				}
			}
		}
		hs.Delete(k)
	}
}

// receiveHandoff merges the counters a peer handed to this node, their
// new owner, into its own (the more consumed state wins). Its answer names
// the counters refused (see receiveStates), as a msgpack array of their
// positions; none, when empty.
func (n *Node) receiveHandoff(ctx context.Context, body []byte) ([]byte, error) {
	hs, ok := n.store.(handoffStore)
	if !ok {
		return nil, nil
	}
	merged, refused, err := n.receiveStates(ctx, methodHandoff, body, hs.Merge)
	n.metrics.receivedHandoff.Add(float64(merged))
	if n.repl != nil && merged > 0 {
		n.repl.changed()
	}
	if err != nil || len(refused) == 0 {
		return nil, err
	}
	return refusedAnswer(refused), nil
}

// countTrue returns how many of v are true.
func countTrue(v []bool) int {
	n := 0
	for _, b := range v {
		if b {
			n++
		}
	}
	return n
}

// refusedAnswer encodes the positions of a hand-off's refused counters.
func refusedAnswer(refused []uint32) []byte {
	answer := msgpackenc.AppendArrayLen(nil, len(refused))
	for _, i := range refused {
		answer = msgpackenc.AppendUint(answer, uint64(i))
	}
	return answer
}

// refusedOf reads a hand-off's answer: which of its n counters the
// receiver refused. An empty answer refuses none.
func refusedOf(answer []byte, n int) ([]bool, error) {
	keep := make([]bool, n)
	if len(answer) == 0 {
		return keep, nil
	}
	var idx []uint32
	if err := msgpack.Unmarshal(answer, &idx); err != nil {
		return nil, err
	}
	for _, i := range idx {
		if int(i) >= n {
			return nil, fmt.Errorf("refused position %d of %d counters", i, n)
		}
		keep[i] = true
	}
	return keep, nil
}
