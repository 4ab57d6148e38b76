package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/transport"
)

// Request is one check (or refund) of a batch: hits against key under the
// named policy. It is bucket.Request; bucket.Check is a store's check, with
// the policy resolved.
type Request = bucket.Request

// Result is the answer to one check of a batch: a decision, or the error
// Allow would have returned for it.
type Result = bucket.Result

// AllowBatch decides checks[i] into out[i], as Allow would, in fewer round
// trips: the checks owned by each peer go to it in one message, and the
// local ones go to the store in one call when it batches (the Redis store
// pipelines them). out must be at least as long as checks. The error is
// ErrClosed, ctx's error, or a short out; per-check errors are in out.
func (n *Node) AllowBatch(ctx context.Context, checks []Request, out []Result) error {
	if len(out) < len(checks) {
		return fmt.Errorf("cluster: AllowBatch: out holds %d results for %d checks", len(out), len(checks))
	}
	if n.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	table := *n.policies.Load()
	now := n.clock.Now()
	if n.gossip != nil && n.partitioned {
		// Checks decided here hold the lock of local decisions from the
		// route's load to the store's answer (see handover.go); while a
		// key may be changing owner, or once this node has handed its
		// keys over as it leaves, each check goes its own way (where).
		n.copyMu.RLock()
		rt := n.route.Load()
		if rt == nil || n.handingOver(rt) || n.ho.gone.Load() {
			n.copyMu.RUnlock()
			for i, c := range checks {
				p, err := n.checkInput(table, c.Policy, c.Key, c.Hits)
				if err == nil {
					out[i].Decision, err = n.decide(ctx, p, c.Key, c.Hits, now)
					out[i].Decision, err = n.finish(p, c.Key, c.Hits, out[i].Decision, now, err)
				}
				out[i].Err = err
			}
			return nil
		}
		return n.allowBatch(ctx, table, rt, true, checks, out, now)
	}
	return n.allowBatch(ctx, table, n.route.Load(), false, checks, out, now)
}

// allowBatch is AllowBatch on a settled ring; with locked, copyMu is
// read-locked and allowBatch unlocks it once the local checks are
// decided.
func (n *Node) allowBatch(ctx context.Context, table policyTable, rt *routeTable, locked bool, checks []Request, out []Result, now time.Time) error {
	route := rt != nil && n.partitioned && (rt.ring.Len() > 1 || n.leaving.Load())
	entries := make([]*policyEntry, len(checks))
	var local []int
	remote := map[string][]int{} // owner → check indexes
	var asks []leaseAskItem      // checks that ask for a lease (lease.go)
	for i, c := range checks {
		p, err := n.checkInput(table, c.Policy, c.Key, c.Hits)
		if err != nil {
			out[i] = Result{Err: err}
			continue
		}
		entries[i] = p
		if rt != nil && rt.minority {
			d, err := n.fallback(ctx, p, c.Key, c.Hits, now, rt.known, rt.minorityErr())
			out[i] = Result{Decision: d, Err: err}
			continue
		}
		if route {
			if owner, addr := rt.owner(bucket.Key{Policy: c.Policy, ID: c.Key}); owner != rt.self && owner != "" {
				d, ok, want := n.answerHereLater(p, c.Key, c.Hits, now)
				switch {
				case ok:
					out[i] = Result{Decision: d}
					if want > 0 {
						asks = append(asks, leaseAskItem{i, want, owner, addr, true})
					}
				case want > 0:
					asks = append(asks, leaseAskItem{i, want, owner, addr, false})
				default:
					remote[owner] = append(remote[owner], i)
				}
				continue
			}
		}
		local = append(local, i)
	}
	copy := n.decideLocal(ctx, checks, local, entries, now, out)
	if locked {
		n.copyMu.RUnlock()
	}
	if copy != nil && !n.copied(ctx, copy, Decision{Allowed: true}, 1) {
		// A sync policy's copy did not reach its successor: its allowed
		// checks are not answered allowed on this counter alone.
		for _, i := range local {
			if c := checks[i]; entries[i] != nil && entries[i].Replication == bucket.ReplicateSync && out[i].Err == nil && out[i].Decision.Allowed && c.Hits > 0 {
				out[i].Decision, out[i].Err = n.fallback(ctx, entries[i], c.Key, c.Hits, now, n.liveNodes(), errNotCopied)
			}
		}
	}
	n.sendLeaseAsks(ctx, asks, checks, entries, rt, now, out, remote)
	for owner, idx := range remote {
		n.decideRemote(ctx, checks, idx, entries, rt, owner, now, out)
	}
	for i, c := range checks {
		if p := entries[i]; p != nil {
			out[i].Decision, out[i].Err = n.finish(p, c.Key, c.Hits, out[i].Decision, now, out[i].Err)
		}
	}
	return nil
}

// decideLocal decides the checks at idx in this node's store.
func (n *Node) decideLocal(ctx context.Context, checks []Request, idx []int, entries []*policyEntry, now time.Time, out []Result) (copy *policyEntry) {
	if len(idx) == 0 {
		return nil
	}
	if bs, ok := n.store.(bucket.BatchStore); ok && len(idx) > 1 {
		batch := make([]bucket.Check, len(idx))
		decs := make([]bucket.Decision, len(idx))
		for j, i := range idx {
			batch[j] = bucket.Check{Key: bucket.Key{Policy: checks[i].Policy, ID: checks[i].Key}, Policy: entries[i].Policy, Hits: checks[i].Hits}
		}
		err := bs.TakeBatch(ctx, batch, now, decs)
		if err != nil {
			n.metrics.errors.Add(float64(len(idx)))
		}
		for j, i := range idx {
			switch {
			case err == nil:
				out[i] = Result{Decision: decs[j]}
			case ctx.Err() != nil:
				out[i] = Result{Err: ctx.Err()}
			default:
				d, ferr := n.fallback(ctx, entries[i], checks[i].Key, checks[i].Hits, now, n.liveNodes(), err)
				out[i] = Result{Decision: d, Err: ferr}
			}
		}
		return nil
	}
	// copy: a policy whose change is to be copied, sync ones first
	for _, i := range idx {
		c := checks[i]
		d, err := n.store.Take(ctx, bucket.Key{Policy: c.Policy, ID: c.Key}, entries[i].Policy, c.Hits, now)
		switch {
		case err != nil && ctx.Err() == nil:
			n.metrics.errors.Inc()
			d, err = n.fallback(ctx, entries[i], c.Key, c.Hits, now, n.liveNodes(), err)
		case err == nil && d.Allowed && c.Hits > 0:
			if copy == nil || entries[i].Replication == bucket.ReplicateSync {
				copy = entries[i]
			}
		}
		out[i] = Result{Decision: d, Err: err}
	}
	return copy
}

// decideRemote sends the checks at idx to their owner in one message, and
// waits for it as forward does; the checks it cannot decide go to their
// successor one by one.
func (n *Node) decideRemote(ctx context.Context, checks []Request, idx []int, entries []*policyEntry, rt *routeTable, owner string, now time.Time, out []Result) {
	addr := rt.addrs[owner]
	items := make([]transport.CheckItem, len(idx))
	res := make([]transport.CheckResult, len(idx))
	for j, i := range idx {
		items[j] = transport.CheckItem{Policy: checks[i].Policy, Key: checks[i].Key, Hits: checks[i].Hits}
	}
	fctx, done := n.forwardCtx(ctx, rt, owner)
	err := n.tr.CheckMany(fctx, addr, items, res)
	done()
	for j, i := range idx {
		c := checks[i]
		switch {
		case err != nil && ctx.Err() != nil:
			out[i] = Result{Err: ctx.Err()}
		case slowPeer(err) && n.sameMember(rt, owner):
			// Not gone, only slow to reach: asked again as forward does.
			d, ferr := n.forward(ctx, entries[i], c.Key, c.Hits, rt, owner, addr, now)
			out[i] = Result{Decision: d, Err: ferr}
		case err != nil:
			d, ferr := n.failover(ctx, entries[i], c.Key, c.Hits, rt, owner, now, fmt.Errorf("%w: %s: %w", ErrOwnerUnavailable, addr, err))
			out[i] = Result{Decision: d, Err: ferr}
		case res[j].Status == transport.StatusOK:
			out[i] = Result{Decision: fromWire(res[j])}
			n.denyCache.store(entries[i], c.Key, c.Hits, out[i].Decision, now)
		case res[j].Status == transport.StatusBadRequest:
			out[i] = Result{Err: fmt.Errorf("%w: refused by its owner", ErrInvalidKey)}
		case res[j].Status == transport.StatusUnavailable:
			// Alive but unable to decide now: asked again as forward
			// does, not failed over.
			d, ferr := n.forward(ctx, entries[i], c.Key, c.Hits, rt, owner, addr, now)
			out[i] = Result{Decision: d, Err: ferr}
		default:
			d, ferr := n.failover(ctx, entries[i], c.Key, c.Hits, rt, owner, now, fmt.Errorf("%w: %s answered %s", ErrOwnerUnavailable, addr, res[j].Status))
			out[i] = Result{Decision: d, Err: ferr}
		}
	}
}
