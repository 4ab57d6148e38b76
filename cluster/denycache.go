package cluster

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/bucket"
)

// The denial cache: when a key's owner denies a forwarded check, its answer
// says when the same check could pass (RetryAfter). Until then the owner
// denies that check, and any of more hits, whatever else happens: other
// checks only consume more, which moves that time later, never earlier.
// So the forwarding node answers such checks itself, with no network hop,
// until that time: one address flooding a cluster loads the node it
// arrives at, not the key's owner. Exact, as long as the policy is the
// same: an entry holds the policy table entry it was denied under, and
// the table is rebuilt on every policy change, so an entry of an older
// table never answers.

// DefaultDenyCacheKeys is the default Config.DenyCacheKeys.
const DefaultDenyCacheKeys = 1 << 16

// denyShards is the number of locked parts of the cache.
const denyShards = 64

// denyCache holds recent denials of forwarded checks. Its methods are safe
// for concurrent use; a nil cache holds nothing.
type denyCache struct {
	seed     maphash.Seed
	perShard int
	// margin is taken off each entry's time, so that clocks that lag by up
	// to a tick (the coarse clock) never let an entry outlive the owner's
	// denial.
	margin time.Duration
	shards [denyShards]denyShard
	hits   atomic.Int64 // checks answered from the cache
	stored atomic.Int64 // denials stored
}

type denyShard struct {
	mu sync.Mutex
	m  map[bucket.Key]denial
	_  [48]byte // keep shards on separate cache lines
}

// denial is one cached owner's denial.
type denial struct {
	policy *policyEntry // the table entry it was denied under
	hits   int64        // the hits of the check denied
	until  time.Time    // the check denies until then
	reset  time.Time    // the counter is full again then
	d      Decision     // the owner's answer
}

// newDenyCache returns a cache of at most size denials, or nil for size <
// 0.
func newDenyCache(size int, margin time.Duration) *denyCache {
	if size < 0 {
		return nil
	}
	c := &denyCache{seed: maphash.MakeSeed(), perShard: max(1, size/denyShards), margin: margin}
	for i := range c.shards {
		c.shards[i].m = map[bucket.Key]denial{}
	}
	return c
}

func (c *denyCache) shard(k bucket.Key) *denyShard {
	return &c.shards[maphash.Comparable(c.seed, k)%denyShards]
}

// lookup answers a check of hits on key under p at now from a denial, if
// one covers it: same policy table entry, no fewer hits, before its time.
func (c *denyCache) lookup(p *policyEntry, key string, hits int64, now time.Time) (Decision, bool) {
	if c == nil {
		return Decision{}, false
	}
	k := bucket.Key{Policy: p.Name, ID: key}
	sh := c.shard(k)
	sh.mu.Lock()
	e, ok := sh.m[k]
	if ok && (e.policy != p || !now.Before(e.until)) {
		delete(sh.m, k)
		ok = false
	}
	sh.mu.Unlock()
	if !ok || max(hits, 1) < e.hits {
		return Decision{}, false
	}
	c.hits.Add(1)
	d := e.d
	d.RetryAfter = e.until.Sub(now)
	d.ResetAfter = max(e.reset.Sub(now), d.RetryAfter)
	if hits > d.Limit {
		d.RetryAfter = d.ResetAfter
	}
	return d, true
}

// covers reports whether a denial of key under p holds at now (a check
// of one hit would be answered from it), without answering one.
func (c *denyCache) covers(p *policyEntry, key string, now time.Time) bool {
	if c == nil {
		return false
	}
	k := bucket.Key{Policy: p.Name, ID: key}
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[k]
	return ok && e.policy == p && now.Before(e.until) && e.hits <= 1
}

// store remembers the owner's answer d to a check of hits on key under p,
// sent at now, if it is a denial that a wait can end. A peek's denial is
// not kept: a peek writes nothing, and of a counter last written under
// another window its retry time is an estimate (the counter may turn idle
// sooner), where a check that takes hits writes the counter as it judged
// it.
func (c *denyCache) store(p *policyEntry, key string, hits int64, d Decision, now time.Time) {
	if c == nil || hits <= 0 || d.Allowed || d.RetryAfter <= c.margin {
		return
	}
	e := denial{policy: p, hits: hits, until: now.Add(d.RetryAfter - c.margin), reset: now.Add(d.ResetAfter - c.margin), d: d}
	k := bucket.Key{Policy: p.Name, ID: key}
	sh := c.shard(k)
	sh.mu.Lock()
	if old, ok := sh.m[k]; ok && old.policy == p && old.hits < e.hits && now.Before(old.until) {
		// The older denial covers more checks; keep it.
		sh.mu.Unlock()
		return
	}
	if _, ok := sh.m[k]; !ok && len(sh.m) >= c.perShard {
		c.evict(sh, now)
	}
	sh.m[k] = e
	sh.mu.Unlock()
	c.stored.Add(1)
}

// evict makes room in a full shard whose lock is held: it drops the
// expired denials, or else one (Go's map order picks it).
func (c *denyCache) evict(sh *denyShard, now time.Time) {
	for k, e := range sh.m {
		if !now.Before(e.until) {
			delete(sh.m, k)
		}
	}
	if len(sh.m) < c.perShard {
		return
	}
	for k := range sh.m {
		delete(sh.m, k)
		return
	}
}

// len returns the number of denials held.
func (c *denyCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// register exports the cache's size and counts.
func (c *denyCache) register(m *metrics) {
	if c == nil || m == nil || m.reg == nil {
		return
	}
	for _, col := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "ratelimit", Name: "deny_cache_entries",
			Help: "Owners' denials this node holds, to answer checks of their keys without forwarding them until their retry time.",
		}, func() float64 { return float64(c.len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "deny_cache_hits_total",
			Help: "Checks this node denied from an owner's cached denial, without forwarding them.",
		}, func() float64 { return float64(c.hits.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "deny_cache_stored_total",
			Help: "Owners' denials stored in the denial cache.",
		}, func() float64 { return float64(c.stored.Load()) }),
	} {
		if err := m.reg.Register(col); err == nil {
			m.cols = append(m.cols, col)
		}
	}
}
