package cluster

import (
	"context"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
)

// Counter copies: every ReplicaInterval a node sends the counters that
// moved (by 1/16 of their capacity; see bucket.MemoryConfig.TrackChanges)
// to the node that would own each key if this one failed (its successor:
// the owner in the ring without this node), which keeps them apart from its
// own counters. When the ring drops a crashed node, each successor folds
// the copies of the keys it now owns into its counters before it takes
// their checks. A crash so forgives, per key, less than 1/16 of the
// capacity plus the hits of the last interval, instead of the whole
// counter.

// methodReplica carries counter copies to a successor.
const methodReplica = "replica"

// changeTracker is a store that lists the counters checks changed: the
// memory store with TrackChanges.
type changeTracker interface {
	Tracking() bool
	Changed(fn func(k bucket.Key, st bucket.State))
}

// replicaTimeout bounds one replica call.
const replicaTimeout = 2 * time.Second

// replicaLoop sends what changed every ReplicaInterval until the node
// stops; while no check comes, it sleeps until one does (n.replicaWake).
func (n *Node) replicaLoop(tr changeTracker) {
	n.everyWhileBusy(n.cfg.ReplicaInterval, n.replicaWake, func() bool {
		changed := false
		n.sendReplicas(n.successorGroups(func(add func(bucket.Key, bucket.State) bool) {
			tr.Changed(func(k bucket.Key, st bucket.State) { changed = true; add(k, st) })
		}))
		return changed
	})
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
			groups[to] = append(groups[to], handoffItem{Policy: k.Policy, Key: k.ID, T: st.T, Count: st.Count, Idle: st.Idle, Span: st.Span})
		}
		return true
	})
	return groups
}

// sendReplicas sends each group to its successor, in chunks.
func (n *Node) sendReplicas(groups map[string][]handoffItem) {
	rt := n.route.Load()
	if rt == nil {
		return
	}
	for to, items := range groups {
		addr := rt.addrs[to]
		for len(items) > 0 {
			chunk := items[:min(len(items), handoffChunk)]
			items = items[len(chunk):]
			body, err := msgpack.Marshal(handoffMsg{From: n.cfg.NodeName, Version: 1, Items: chunk})
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), replicaTimeout)
				_, err = n.tr.Call(ctx, addr, methodReplica, body)
				cancel()
			}
			if err != nil {
				n.metrics.replicaErrors.Add(float64(len(chunk)))
				n.warnings.warn(n.clock.Now(), "copying counters to their successor failed; a crash of this node would lose their last hits", "to", to, "counters", len(chunk), "err", err)
				continue
			}
			n.metrics.replicaSent.Add(float64(len(chunk)))
			n.replicasSent.Add(uint64(len(chunk)))
		}
	}
}

// receiveReplica keeps the copies a peer sent, merged with those it sent
// before.
func (n *Node) receiveReplica(ctx context.Context, body []byte) error {
	if n.replicas == nil {
		return nil
	}
	merged, err := n.receiveStates(ctx, methodReplica, body, n.replicas.Merge)
	n.metrics.replicaReceived.Add(float64(merged))
	return err
}

// promoteReplicas folds the copies of the keys that rt gives this node
// into its own counters (the more consumed state wins) and drops them from
// the copies. It runs before rt takes effect.
func (n *Node) promoteReplicas(rt *routeTable) {
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
	}
	n.metrics.replicaPromoted.Add(float64(len(mine)))
	n.log.Info("took over counter copies of keys now owned here", "counters", len(mine))
}
