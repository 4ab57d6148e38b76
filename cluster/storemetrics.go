package cluster

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/bucket"
)

// storeWatchInterval is how often a node looks whether its memory stores
// stopped evicting, while one is; storeWatchQuiet is how often it looks
// whether one started, while none is (rarely, as it wakes an idle node).
const (
	storeWatchInterval = time.Second
	storeWatchQuiet    = 5 * time.Second
)

// namedStore is a memory store of the node and its label in metrics and
// logs: "counters" (the keys it owns) or "replicas" (copies for peers).
type namedStore struct {
	name  string
	store *bucket.MemoryStore
}

// memoryStores lists the node's memory stores that hold counters of the
// cluster: its own store if it is one, and the copies.
func (n *Node) memoryStores() []namedStore {
	var out []namedStore
	if ms, ok := n.store.(*bucket.MemoryStore); ok {
		out = append(out, namedStore{"counters", ms})
	}
	if n.replicas != nil {
		out = append(out, namedStore{"replicas", n.replicas})
	}
	return out
}

// watchStores exports the memory stores' size and evictions as metrics,
// and logs when one starts and stops evicting: a full store is an attack or
// a MaxKeys too small, and either needs an operator's eye.
func (n *Node) watchStores() {
	stores := n.memoryStores()
	if len(stores) == 0 {
		return
	}
	n.registerStoreMetrics(stores)
	last := make([]int64, len(stores))
	evicting := make([]bool, len(stores))
	for i, s := range stores {
		last[i] = s.store.Evictions()
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTimer(storeWatchQuiet)
		defer t.Stop()
		for {
			select {
			case <-n.stop:
				return
			case <-t.C:
			}
			busy := false
			for i, s := range stores {
				ev := s.store.Evictions()
				switch {
				case ev > last[i] && !evicting[i]:
					evicting[i] = true
					n.log.Warn("counter store full: evicting the counters whose loss forgives the fewest hits",
						"store", s.name, "counters", s.store.Len(), "max_keys", s.store.MaxKeys(),
						"evicted", ev-last[i], "denying_evicted", s.store.Evicted(bucket.EvictDenying),
						"refused", s.store.Evicted(bucket.EvictRefused))
				case ev == last[i] && evicting[i]:
					evicting[i] = false
					n.log.Info("counter store no longer evicting", "store", s.name, "counters", s.store.Len(), "evictions_total", ev)
				}
				last[i] = ev
				busy = busy || evicting[i]
			}
			if busy {
				t.Reset(storeWatchInterval)
			} else {
				t.Reset(storeWatchQuiet)
			}
		}
	}()
}

// registerStoreMetrics registers a gauge of the counters each store holds,
// its bound, and a counter of its evictions by reason.
func (n *Node) registerStoreMetrics(stores []namedStore) {
	m := n.metrics
	if m == nil || m.reg == nil {
		return
	}
	var cols []prometheus.Collector
	for _, s := range stores {
		st := s.store
		labels := prometheus.Labels{"store": s.name}
		cols = append(cols,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: "ratelimit", Name: "store_counters", ConstLabels: labels,
				Help: "Counters held in memory: the node's own (store=counters) and copies for peers (store=replicas).",
			}, func() float64 { return float64(st.Len()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: "ratelimit", Name: "store_max_counters", ConstLabels: labels,
				Help: "Counters the memory store holds at most (--max-keys); past it, it evicts.",
			}, func() float64 { return float64(st.MaxKeys()) }),
		)
		for _, r := range bucket.EvictReasons() {
			cols = append(cols, prometheus.NewCounterFunc(prometheus.CounterOpts{
				Namespace: "ratelimit", Name: "store_evictions_total",
				ConstLabels: prometheus.Labels{"store": s.name, "reason": r.String()},
				Help:        "Counters evicted from a full memory store, by reason: idle (nothing forgiven), counting (it admitted the next hit), denying (its shard held only denying counters), refused (a new counter not kept because every held one was denying).",
			}, func() float64 { return float64(st.Evicted(r)) }))
		}
	}
	for _, c := range cols {
		if err := m.reg.Register(c); err != nil {
			n.log.Warn("registering the store metrics", "err", err)
			continue
		}
		m.cols = append(m.cols, c)
	}
}
