package bucket

// The memory store as it was before its counters moved into pointer-free
// slots (a map of pointers to entries): the baseline of the store's
// benchmarks, and a second implementation the tests compare it with.

import (
	"context"
	"hash/maphash"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// mapStore keeps counters in memory. It is safe for concurrent use: keys
// are spread over shards, each with its own lock, and no lock spans shards.
type mapStore struct {
	shards   []mapShard
	mask     uint64
	perShard int
	seed     maphash.Seed
	track    bool
	keys     atomic.Int64
	evicted  [evictReasons]atomic.Int64
}

type mapShard struct {
	mu      sync.Mutex
	m       map[string]*mapEntry
	changed []mapChangedRef // with TrackChanges: the counters changed since Changed
	// allDenying is the Unix second until which every counter of the full
	// shard is known to deny: a new counter that would not deny is not
	// kept before then, without a look at the others.
	allDenying int64
	_          [16]byte // keep shards on separate cache lines
}

// entry is a counter of the map: its state, the hits it admitted since it
// was last listed, whether it is on its shard's changed list, and what
// evicting it costs.
type mapEntry struct {
	State
	worth
	since  int64
	listed bool
}

// mapChangedRef is a counter on a shard's changed list.
type mapChangedRef struct {
	key string // the encoded key
	e   *mapEntry
}

// newMapStore returns an empty store.
func newMapStore(cfg MemoryConfig) *mapStore {
	if cfg.Shards <= 0 {
		cfg.Shards = 256
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	n := 1 << bits.Len(uint(cfg.Shards-1))
	s := &mapStore{
		shards:   make([]mapShard, n),
		mask:     uint64(n - 1),
		perShard: max(1, cfg.MaxKeys/n),
		seed:     maphash.MakeSeed(),
		track:    cfg.TrackChanges,
	}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*mapEntry)
	}
	return s
}

// Take implements Store. It never returns an error.
func (s *mapStore) Take(_ context.Context, k Key, p Policy, hits int64, now time.Time) (Decision, error) {
	var buf [96]byte
	enc := k.appendTo(buf[:0])
	sh := &s.shards[maphash.Bytes(s.seed, enc)&s.mask]
	p.Limit = p.LimitFor(k.ID)
	sh.mu.Lock()
	e := sh.m[string(enc)]
	if e == nil {
		fresh := &mapEntry{}
		d := Take(p, &fresh.State, hits, now)
		if fresh.State != (State{}) {
			fresh.worth = worthOf(d, &fresh.State, now)
			key := string(enc)
			if s.insert(sh, key, fresh, now) && s.track && d.Allowed && hits > 0 && !fresh.listed {
				sh.countHits(key, fresh, hits, &p)
			}
		}
		sh.mu.Unlock()
		return d, nil
	}
	d := Take(p, &e.State, hits, now)
	e.worth = worthOf(d, &e.State, now)
	if s.track && d.Allowed && hits > 0 && !e.listed {
		sh.countHits(string(enc), e, hits, &p)
	}
	sh.mu.Unlock()
	return d, nil
}

// countHits adds hits admitted under p to e, and lists it once they
// reach CopyEvery(p).
func (sh *mapShard) countHits(key string, e *mapEntry, hits int64, p *Policy) {
	if e.since += hits; e.since >= CopyEvery(p) {
		sh.markChanged(key, e)
	}
}

// markChanged puts e, under key, on the shard's changed list; the lock is
// held.
func (sh *mapShard) markChanged(key string, e *mapEntry) {
	e.listed = true
	e.since = 0
	sh.changed = append(sh.changed, mapChangedRef{key, e})
}

// Tracking reports whether the store tracks changed counters
// (MemoryConfig.TrackChanges).
func (s *mapStore) Tracking() bool { return s.track }

// Changed calls fn with each counter listed as changed since the last call
// (see MemoryConfig.TrackChanges), once each and as it is now, one shard
// at a time, and forgets them. fn must not call the store. Without
// TrackChanges there are none.
func (s *mapStore) Changed(fn func(k Key, st State)) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		list := sh.changed
		for _, c := range list {
			c.e.listed = false
			if sh.m[c.key] != c.e {
				continue // deleted since, maybe replaced by a new counter
			}
			if k, ok := decodeKey(c.key); ok {
				fn(k, c.e.State)
			}
		}
		clear(list)
		sh.changed = list[:0]
		sh.mu.Unlock()
	}
}

// insert adds a counter to a shard whose lock is held, evicting one if the
// shard is full, and reports whether it was kept (see Evicted).
func (s *mapStore) insert(sh *mapShard, key string, e *mapEntry, now time.Time) bool {
	if len(sh.m) >= s.perShard {
		sec := now.Unix()
		cost := e.cost(&e.State, sec)
		if sec < sh.allDenying && cost < denyingCost {
			s.evicted[EvictRefused].Add(1)
			return false
		}
		var victim string
		var least uint64
		n := 0
		until := int64(math.MaxInt64)
		for k, v := range sh.m {
			c := v.cost(&v.State, sec)
			if n == 0 || c < least {
				victim, least = k, c
			}
			if c >= denyingCost {
				until = min(until, int64(v.until))
			}
			n++
			if least == 0 || (n >= evictSample && least < denyingCost) {
				break
			}
		}
		if least >= denyingCost {
			// Every counter of the shard is denying.
			sh.allDenying = until
			if cost < denyingCost {
				s.evicted[EvictRefused].Add(1)
				return false
			}
		}
		delete(sh.m, victim)
		s.evicted[reasonOf(least)].Add(1)
		s.keys.Add(-1)
	}
	sh.m[key] = e
	s.keys.Add(1)
	return true
}

// Sweep implements Store: it drops every counter that is idle at now.
func (s *mapStore) Sweep(now time.Time) int {
	dropped := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, v := range sh.m {
			if v.IdleAt(now) {
				delete(sh.m, k)
				dropped++
			}
		}
		sh.mu.Unlock()
	}
	s.keys.Add(int64(-dropped))
	return dropped
}

// Len returns the number of counters held.
func (s *mapStore) Len() int { return int(s.keys.Load()) }

// MaxKeys returns the bound on the counters held (MemoryConfig.MaxKeys,
// rounded down to a multiple of the shards).
func (s *mapStore) MaxKeys() int { return s.perShard * len(s.shards) }

// Evictions returns how many counters were evicted or not kept to respect
// MaxKeys, for every reason.
func (s *mapStore) Evictions() int64 {
	var n int64
	for i := range s.evicted {
		n += s.evicted[i].Load()
	}
	return n
}

// Evicted returns how many counters were evicted, or not kept, for
// reason (EvictIdle, EvictCounting, EvictDenying or EvictRefused).
func (s *mapStore) Evicted(reason EvictReason) int64 {
	if reason < 0 || reason >= evictReasons {
		return 0
	}
	return s.evicted[reason].Load()
}

// Range calls fn for each counter that is not idle at now, one shard at a
// time, until fn returns false. fn must not call the store.
func (s *mapStore) Range(now time.Time, fn func(k Key, st State) bool) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for ks, v := range sh.m {
			if v.IdleAt(now) {
				continue
			}
			k, ok := decodeKey(ks)
			if ok && !fn(k, v.State) {
				sh.mu.Unlock()
				return
			}
		}
		sh.mu.Unlock()
	}
}

// Merge folds st into the counter of k under p, keeping the more consumed
// of the two (see the package function Merge).
func (s *mapStore) Merge(k Key, p Policy, st State, now time.Time) {
	var buf [96]byte
	enc := k.appendTo(buf[:0])
	sh := &s.shards[maphash.Bytes(s.seed, enc)&s.mask]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if cur := sh.m[string(enc)]; cur != nil {
		cur.State = Merge(p, cur.State, st)
		peek := cur.State
		p.Limit = p.LimitFor(k.ID)
		cur.worth = worthOf(Take(p, &peek, 0, now), &cur.State, now)
		if s.track && !cur.listed {
			sh.markChanged(string(enc), cur)
		}
		return
	}
	if st.IdleAt(now) {
		return
	}
	key, e := string(enc), &mapEntry{State: st}
	peek := st
	p.Limit = p.LimitFor(k.ID)
	e.worth = worthOf(Take(p, &peek, 0, now), &st, now)
	if s.insert(sh, key, e, now) && s.track {
		sh.markChanged(key, e)
	}
}

// Delete drops the counter of k, if any.
func (s *mapStore) Delete(k Key) {
	var buf [96]byte
	enc := k.appendTo(buf[:0])
	sh := &s.shards[maphash.Bytes(s.seed, enc)&s.mask]
	sh.mu.Lock()
	if _, ok := sh.m[string(enc)]; ok {
		delete(sh.m, string(enc))
		s.keys.Add(-1)
	}
	sh.mu.Unlock()
}
