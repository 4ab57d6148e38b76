package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
)

// RefundAll, as the hits of a refund, resets the counter (see
// bucket.RefundAll).
const RefundAll = bucket.RefundAll

// Refunds go to the key's owner over the peer transport's calls, like a
// hand-off: one call per owner carries every refund of a batch that it
// owns. The owner then sends the same refunds to the key's successor, so
// that the copy of the counter there (see replica.go) gives the hits back
// too, and a crash of the owner does not bring them back.
const methodRefund = "refund"

// maxRefundItems bounds the refunds of one call a peer sends.
const maxRefundItems = 100_000

// Refund gives hits back to the counter of key under the named policy, as
// if that many fewer had been admitted, never below a fresh counter, and
// returns the decision a peek would then get. hits == RefundAll resets the
// counter. Like a check, it is decided by the key's owner. Errors are
// ErrUnknownPolicy, ErrInvalidKey, ErrInvalidHits (hits above
// Config.MaxHits and not RefundAll), ErrClosed, ErrNoRefund, ctx's error,
// or ErrOwnerUnavailable: a refund that cannot reach the owner is not
// made, and no failure mode stands in for it.
func (n *Node) Refund(ctx context.Context, policy, key string, hits int64) (Decision, error) {
	out := make([]Result, 1)
	if err := n.RefundBatch(ctx, []Request{{Policy: policy, Key: key, Hits: hits}}, out); err != nil {
		return Decision{}, err
	}
	return out[0].Decision, out[0].Err
}

// RefundBatch makes refunds[i] (Hits given back, or RefundAll to reset)
// into out[i], as Refund would, with one call per owner. out must be at
// least as long as refunds. The error is ErrClosed, ctx's error, or a
// short out; per-refund errors are in out.
func (n *Node) RefundBatch(ctx context.Context, refunds []Request, out []Result) error {
	if len(out) < len(refunds) {
		return fmt.Errorf("cluster: RefundBatch: out holds %d results for %d refunds", len(out), len(refunds))
	}
	if n.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	table := *n.policies.Load()
	rt := n.route.Load()
	route := rt != nil && n.partitioned && (rt.ring.Len() > 1 || n.leaving.Load())
	var local []refundItem
	var localIdx []int
	remote := map[string][]int{} // peer address → refund indexes
	for i, r := range refunds {
		hits := r.Hits
		if hits == RefundAll {
			hits = 0 // RefundAll is valid; check the rest
		}
		if _, err := n.checkInput(table, r.Policy, r.Key, hits); err != nil {
			out[i] = Result{Err: err}
			continue
		}
		if route {
			if owner, addr := rt.owner(bucket.Key{Policy: r.Policy, ID: r.Key}); owner != rt.self && owner != "" {
				remote[addr] = append(remote[addr], i)
				continue
			}
		}
		local = append(local, refundItem{Policy: r.Policy, Key: r.Key, Hits: r.Hits})
		localIdx = append(localIdx, i)
	}
	if len(local) > 0 {
		res := n.refundLocal(ctx, local)
		for j, i := range localIdx {
			out[i] = res[j].result()
		}
	}
	for addr, idx := range remote {
		items := make([]refundItem, len(idx))
		for j, i := range idx {
			items[j] = refundItem{Policy: refunds[i].Policy, Key: refunds[i].Key, Hits: refunds[i].Hits}
		}
		res, err := n.callRefund(ctx, addr, refundMsg{From: n.cfg.NodeName, Version: 1, Items: items})
		for j, i := range idx {
			switch {
			case err != nil && ctx.Err() != nil:
				out[i] = Result{Err: ctx.Err()}
			case err != nil:
				out[i] = Result{Err: fmt.Errorf("%w: %s: %w", ErrOwnerUnavailable, addr, err)}
			default:
				out[i] = res[j].result()
			}
		}
	}
	return nil
}

// refundMsg carries refunds to a key's owner, or (Copy) to its successor,
// for the copies it keeps.
type refundMsg struct {
	// From is the sender's node name: a copy's refund is taken only from
	// the key's owner.
	From    string       `msgpack:"f,omitempty"`
	Version uint8        `msgpack:"v"`
	Copy    bool         `msgpack:"c,omitempty"`
	Items   []refundItem `msgpack:"i"`
}

type refundItem struct {
	Policy string `msgpack:"p"`
	Key    string `msgpack:"k"`
	Hits   int64  `msgpack:"h"`
}

// refundReply answers a refundMsg, one result per item.
type refundReply struct {
	Results []refundResult `msgpack:"r"`
}

// The outcomes of one refund on its owner.
const (
	refundOK uint8 = iota
	refundUnknownPolicy
	refundBadRequest
	refundUnsupported
	refundFailed // the store's backend failed
)

type refundResult struct {
	Status     uint8 `msgpack:"s"`
	Allowed    bool  `msgpack:"a"`
	Limit      int64 `msgpack:"l"`
	Remaining  int64 `msgpack:"n"`
	ResetAfter int64 `msgpack:"t"` // µs
	RetryAfter int64 `msgpack:"y"` // µs
}

func (r refundResult) result() Result {
	switch r.Status {
	case refundOK:
		return Result{Decision: Decision{Allowed: r.Allowed, Limit: r.Limit, Remaining: r.Remaining,
			ResetAfter: time.Duration(r.ResetAfter) * time.Microsecond, RetryAfter: time.Duration(r.RetryAfter) * time.Microsecond}}
	case refundUnknownPolicy:
		return Result{Err: fmt.Errorf("%w: refused by its owner", ErrUnknownPolicy)}
	case refundBadRequest:
		return Result{Err: fmt.Errorf("%w: refused by its owner", ErrInvalidKey)}
	case refundUnsupported:
		return Result{Err: ErrNoRefund}
	}
	return Result{Err: fmt.Errorf("%w: its store failed", ErrOwnerUnavailable)}
}

// callRefund sends msg to the peer at addr and decodes its answer.
func (n *Node) callRefund(ctx context.Context, addr string, msg refundMsg) ([]refundResult, error) {
	body, err := msgpack.Marshal(msg)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > n.cfg.ForwardTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ForwardTimeout)
		defer cancel()
	}
	b, err := n.tr.Call(ctx, addr, methodRefund, body)
	if err != nil {
		return nil, err
	}
	var reply refundReply
	if err := msgpack.Unmarshal(b, &reply); err != nil {
		return nil, fmt.Errorf("refund answer: %w", err)
	}
	if len(reply.Results) != len(msg.Items) {
		return nil, fmt.Errorf("refund answer: %d results for %d refunds", len(reply.Results), len(msg.Items))
	}
	return reply.Results, nil
}

// refundLocal makes refunds in this node's store, then sends those that
// gave something back to the successors of their keys, for their copies.
func (n *Node) refundLocal(ctx context.Context, items []refundItem) []refundResult {
	res := make([]refundResult, len(items))
	rf, ok := n.store.(bucket.Refunder)
	table := *n.policies.Load()
	now := n.clock.Now()
	for i, it := range items {
		p := table[it.Policy]
		switch {
		case p == nil:
			res[i].Status = refundUnknownPolicy
			continue
		case !ok:
			res[i].Status = refundUnsupported
			continue
		}
		d, err := rf.Refund(ctx, bucket.Key{Policy: it.Policy, ID: it.Key}, p.Policy, it.Hits, now)
		if err != nil {
			n.metrics.errors.Inc()
			res[i].Status = refundFailed
			continue
		}
		res[i] = refundResult{Allowed: d.Allowed, Limit: d.Limit, Remaining: d.Remaining,
			ResetAfter: d.ResetAfter.Microseconds(), RetryAfter: d.RetryAfter.Microseconds()}
	}
	n.refundCopies(items)
	return res
}

// refundCopies sends refunds to the successors of their keys, which keep
// copies of this node's counters, so that a copy promoted after a crash
// does not bring back hits given back here. It is best effort: a copy
// that misses a refund is at worst the counter as it was.
func (n *Node) refundCopies(items []refundItem) {
	rt := n.route.Load()
	if n.replicas == nil || rt == nil || rt.succ == nil {
		return // copies off, or no peer to hold them
	}
	groups := map[string][]refundItem{}
	for _, it := range items {
		var buf [128]byte
		enc, _ := bucket.Key{Policy: it.Policy, ID: it.Key}.AppendBinary(buf[:0])
		if to := rt.succ.Owner(enc); to != "" && to != rt.self {
			groups[to] = append(groups[to], it)
		}
	}
	for to, its := range groups {
		ctx, cancel := context.WithTimeout(n.life, replicaTimeout)
		_, err := n.callRefund(ctx, rt.addrs[to], refundMsg{From: n.cfg.NodeName, Version: 1, Copy: true, Items: its})
		cancel()
		if err != nil {
			n.warnings.Log("a refund did not reach the copies of its counters; a crash of this node would bring its hits back", "to", to, "counters", len(its), "err", err)
		}
	}
}

// receiveRefund serves a refund call: refunds of keys this node owns, or
// (Copy) of the copies it keeps for a peer.
func (n *Node) receiveRefund(ctx context.Context, body []byte) ([]byte, error) {
	if n.closed.Load() {
		return nil, ErrClosed
	}
	var msg refundMsg
	if err := msgpack.Unmarshal(body, &msg); err != nil {
		return nil, fmt.Errorf("cluster: refund: %w", err)
	}
	if len(msg.Items) > maxRefundItems {
		return nil, fmt.Errorf("cluster: refund: %d items, at most %d", len(msg.Items), maxRefundItems)
	}
	for i := range msg.Items {
		it := &msg.Items[i]
		if len(it.Key) == 0 || len(it.Key) > n.cfg.MaxKeyLen || (it.Hits != RefundAll && (it.Hits < 0 || it.Hits > n.cfg.MaxHits)) {
			it.Policy = "" // answered as a bad request below
		}
	}
	var res []refundResult
	if msg.Copy {
		res = make([]refundResult, len(msg.Items))
		if err := n.refundCopy(ctx, &msg); err != nil {
			return nil, err
		}
	} else {
		res = n.refundLocal(ctx, msg.Items)
	}
	for i, it := range msg.Items {
		if it.Policy == "" {
			res[i] = refundResult{Status: refundBadRequest}
		}
	}
	return msgpack.Marshal(refundReply{Results: res})
}

// refundCopy makes the refunds of msg in the copies this node keeps, for
// the keys whose copies it holds from the sender: their owner, of which
// this node is the successor.
func (n *Node) refundCopy(ctx context.Context, msg *refundMsg) error {
	rt := n.route.Load()
	if n.replicas == nil || rt == nil {
		return nil
	}
	if msg.From == "" || msg.From == rt.self || !rt.ring.Has(msg.From) {
		return fmt.Errorf("cluster: refund of copies from %q: %w", capText(msg.From), errNotMember)
	}
	without := n.ringWithout(rt, msg.From)
	table := *n.policies.Load()
	now := n.clock.Now()
	for _, it := range msg.Items {
		p := table[it.Policy]
		if p == nil {
			continue
		}
		k := bucket.Key{Policy: it.Policy, ID: it.Key}
		var buf [128]byte
		enc, _ := k.AppendBinary(buf[:0])
		if rt.ring.Owner(enc) != msg.From || without.Owner(enc) != rt.self {
			continue // not a copy this node keeps for the sender
		}
		_, _ = n.replicas.Refund(ctx, k, p.Policy, it.Hits, now)
	}
	return nil
}
