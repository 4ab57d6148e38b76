package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/transport"
)

// ErrOwnerUnavailable is the cause logged and counted when a check's owner
// cannot answer in time; the policy's failure mode then decides, so Allow
// itself does not return it.
var ErrOwnerUnavailable = errors.New("cluster: owner unavailable")

// forward sends a check to the peer that owns its key.
func (n *Node) forward(ctx context.Context, p *policyEntry, key string, hits int64, addr string, now time.Time, live int) (Decision, error) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) > n.cfg.ForwardTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ForwardTimeout)
		defer cancel()
	}
	res, err := n.tr.Check(ctx, addr, transport.CheckItem{Policy: p.Name, Key: key, Hits: hits})
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, transport.ErrTimeout) {
			return Decision{}, cerr
		}
		return n.fallback(ctx, p, key, hits, now, live, fmt.Errorf("%w: %s: %w", ErrOwnerUnavailable, addr, err))
	}
	switch res.Status {
	case transport.StatusOK:
		return fromWire(res), nil
	case transport.StatusBadRequest:
		return Decision{}, fmt.Errorf("%w: refused by its owner", ErrInvalidKey)
	default:
		return n.fallback(ctx, p, key, hits, now, live, fmt.Errorf("%w: %s answered %s", ErrOwnerUnavailable, addr, res.Status))
	}
}

// fallback decides a check whose counter cannot be reached (its owner, or
// the store's backend) by the policy's failure mode.
func (n *Node) fallback(ctx context.Context, p *policyEntry, key string, hits int64, now time.Time, live int, cause error) (Decision, error) {
	n.metrics.fallback(p.Name, p.FailureMode)
	n.warnings.warn(now, "counter unreachable; failure mode decides", "policy", p.Name, "mode", p.FailureMode.String(), "err", cause)
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
	k := bucket.Key{Policy: p.Name, ID: key}
	// On the key's successor, the copy of its counter says what the owner
	// had already admitted: a check passes only if both the share and the
	// copy let it, and the copy counts it, so that it is in the counter
	// this node starts from if the owner turns out to have crashed. Never
	// more lenient than the share alone.
	copied := false
	if n.replicas != nil {
		if c, _ := n.replicas.Take(ctx, k, p.Policy, 0, now); c.Remaining < c.Limit {
			if !c.Allowed {
				return c, nil
			}
			copied = true
		}
	}
	d, err := n.local.Take(ctx, k, q, hits, now)
	if err == nil && d.Allowed && copied && hits > 0 {
		if c, _ := n.replicas.Take(ctx, k, p.Policy, hits, now); !c.Allowed {
			return c, nil
		}
	}
	return d, err
}

func fromWire(r transport.CheckResult) Decision {
	return Decision{Allowed: r.Allowed, Limit: r.Limit, Remaining: r.Remaining, ResetAfter: r.ResetAfter, RetryAfter: r.RetryAfter}
}

func toWire(d Decision) transport.CheckResult {
	return transport.CheckResult{Status: transport.StatusOK, Allowed: d.Allowed, Limit: d.Limit, Remaining: d.Remaining, ResetAfter: d.ResetAfter, RetryAfter: d.RetryAfter}
}

// peerHandler serves the requests peers send to this node.
type peerHandler struct{ n *Node }

// HandleChecks decides checks forwarded by peers. A leaving node passes on
// the checks of keys it has handed off.
func (h peerHandler) HandleChecks(ctx context.Context, items []transport.CheckItem, results []transport.CheckResult) {
	n := h.n
	if n.closed.Load() {
		for i := range results {
			results[i] = transport.CheckResult{Status: transport.StatusUnavailable}
		}
		return
	}
	now := n.clock.Now()
	table := *n.policies.Load()
	rt := n.route.Load()
	leaving := n.leaving.Load()
	var moved map[string][]int // a leaving node's checks, by new owner
	for i := range items {
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
		if leaving && rt != nil {
			if owner, addr := rt.owner(k); owner != "" && owner != rt.self {
				if moved == nil {
					moved = map[string][]int{}
				}
				moved[addr] = append(moved[addr], i)
				continue
			}
		}
		d, err := n.store.Take(ctx, k, p.Policy, it.Hits, now)
		if err != nil {
			results[i] = transport.CheckResult{Status: transport.StatusUnavailable}
			continue
		}
		results[i] = toWire(d)
	}
	n.replicaWake.poke()
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

// Methods of HandleCall.
const methodHandoff = "handoff"

// HandleCall serves calls off the check path: counter hand-off.
func (h peerHandler) HandleCall(ctx context.Context, method string, body []byte) ([]byte, error) {
	switch method {
	case methodHandoff:
		return nil, h.n.receiveHandoff(ctx, body)
	case methodTopDenied:
		return h.n.serveTopDenied(body)
	case methodCounts:
		return h.n.serveCounts()
	case methodReplica:
		return nil, h.n.receiveReplica(ctx, body)
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
			groups[owner] = append(groups[owner], handoffItem{Policy: k.Policy, Key: k.ID, T: st.T, Count: st.Count, Idle: st.Idle, Span: st.Span})
		}
		return true
	})
	sent := 0
	for owner, items := range groups {
		for len(items) > 0 {
			chunk := items[:min(len(items), handoffChunk)]
			items = items[len(chunk):]
			body, err := msgpack.Marshal(handoffMsg{From: n.cfg.NodeName, Version: 1, Items: chunk})
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, handoffTimeout)
				_, err = n.tr.Call(cctx, rt.addrs[owner], methodHandoff, body)
				cancel()
			}
			if err != nil {
				n.log.Warn("hand-off failed; counters stay here", "to", owner, "counters", len(chunk), "err", err)
				continue
			}
			sent += len(chunk)
			if drop {
				for _, it := range chunk {
					hs.Delete(bucket.Key{Policy: it.Policy, ID: it.Key})
				}
			}
		}
	}
	if sent > 0 {
		n.metrics.handedOff.Add(float64(sent))
		n.log.Info("handed off counters", "counters", sent, "owners", len(groups))
	}
	return sent
}

func (n *Node) receiveHandoff(ctx context.Context, body []byte) error {
	hs, ok := n.store.(handoffStore)
	if !ok {
		return nil
	}
	merged, err := n.receiveStates(ctx, methodHandoff, body, hs.Merge)
	n.metrics.receivedHandoff.Add(float64(merged))
	n.replicaWake.poke()
	return err
}
