package bucket

import (
	"context"
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryConfig configures a MemoryStore. The zero value is ready to use.
type MemoryConfig struct {
	// Shards is the number of independently locked parts, rounded up to a
	// power of two. Default: 256.
	Shards int
	// MaxKeys bounds the number of counters held. When a shard holds its
	// share (MaxKeys/Shards) and a new key arrives, the new key evicts, from
	// a sample of 8 counters of that shard, an idle one if there is one,
	// else the one that would be idle soonest: the counter whose loss
	// forgives the fewest hits. Default: 4,194,304.
	MaxKeys int
	// TrackChanges makes the store list the counters that moved since the
	// last call of Changed, so that a cluster node can copy them to a
	// replica: a counter is listed by the first hit it admits after it was
	// last listed, and by a Merge, so a copy lags its counter by what was
	// admitted since the last Changed. The list holds each such counter
	// (once) until Changed runs, so call it regularly (a cluster node does
	// after every change, one round at a time). Default: off.
	TrackChanges bool
}

// evictSample is the number of counters an eviction looks at.
const evictSample = 8

// MemoryStore keeps counters in memory. It is safe for concurrent use: keys
// are spread over shards, each with its own lock, and no lock spans shards.
type MemoryStore struct {
	shards    []memShard
	mask      uint64
	perShard  int
	seed      maphash.Seed
	track     bool
	evictions atomic.Int64
}

type memShard struct {
	mu      sync.Mutex
	m       map[string]*entry
	changed []changedRef // with TrackChanges: the counters changed since Changed
	_       [24]byte     // keep shards on separate cache lines
}

// entry is a counter of the map: its state, and whether it is on its
// shard's changed list. (57 bytes: the allocator's 64-byte class, as the
// state alone.)
type entry struct {
	State
	listed bool
}

// changedRef is a counter on a shard's changed list.
type changedRef struct {
	key string // the encoded key
	e   *entry
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty store.
func NewMemoryStore(cfg MemoryConfig) *MemoryStore {
	if cfg.Shards <= 0 {
		cfg.Shards = 256
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 1 << 22
	}
	n := 1 << bits.Len(uint(cfg.Shards-1))
	s := &MemoryStore{
		shards:   make([]memShard, n),
		mask:     uint64(n - 1),
		perShard: max(1, cfg.MaxKeys/n),
		seed:     maphash.MakeSeed(),
		track:    cfg.TrackChanges,
	}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*entry)
	}
	return s
}

// Take implements Store. It never returns an error.
func (s *MemoryStore) Take(_ context.Context, k Key, p Policy, hits int64, now time.Time) (Decision, error) {
	var buf [96]byte
	enc := k.appendTo(buf[:0])
	sh := &s.shards[maphash.Bytes(s.seed, enc)&s.mask]
	p.Limit = p.LimitFor(k.ID)
	sh.mu.Lock()
	e := sh.m[string(enc)]
	if e == nil {
		fresh := &entry{}
		d := Take(p, &fresh.State, hits, now)
		if fresh.State != (State{}) {
			key := string(enc)
			s.insert(sh, key, fresh, now)
			if s.track && d.Allowed && hits > 0 && !fresh.listed {
				sh.markChanged(key, fresh)
			}
		}
		sh.mu.Unlock()
		return d, nil
	}
	d := Take(p, &e.State, hits, now)
	if s.track && d.Allowed && hits > 0 && !e.listed {
		sh.markChanged(string(enc), e)
	}
	sh.mu.Unlock()
	return d, nil
}

// markChanged puts e, under key, on the shard's changed list; the lock is
// held.
func (sh *memShard) markChanged(key string, e *entry) {
	e.listed = true
	sh.changed = append(sh.changed, changedRef{key, e})
}

// Tracking reports whether the store tracks changed counters
// (MemoryConfig.TrackChanges).
func (s *MemoryStore) Tracking() bool { return s.track }

// Changed calls fn with each counter listed as changed since the last call
// (see MemoryConfig.TrackChanges), once each and as it is now, one shard
// at a time, and forgets them. fn must not call the store. Without
// TrackChanges there are none.
func (s *MemoryStore) Changed(fn func(k Key, st State)) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		list := sh.changed
		for _, c := range list {
			c.e.listed = false
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
// shard is full.
func (s *MemoryStore) insert(sh *memShard, key string, st *entry, now time.Time) {
	if len(sh.m) >= s.perShard {
		var victim string
		var soonest uint32
		n := 0
		for k, v := range sh.m {
			if v.IdleAt(now) {
				victim = k
				break
			}
			if n == 0 || v.Idle < soonest {
				victim, soonest = k, v.Idle
			}
			if n++; n == evictSample {
				break
			}
		}
		delete(sh.m, victim)
		s.evictions.Add(1)
	}
	sh.m[key] = st
}

// Sweep implements Store: it drops every counter that is idle at now.
func (s *MemoryStore) Sweep(now time.Time) int {
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
	return dropped
}

// Len returns the number of counters held.
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Evictions returns how many counters were evicted to respect MaxKeys.
func (s *MemoryStore) Evictions() int64 { return s.evictions.Load() }

// Range calls fn for each counter that is not idle at now, one shard at a
// time, until fn returns false. fn must not call the store.
func (s *MemoryStore) Range(now time.Time, fn func(k Key, st State) bool) {
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
func (s *MemoryStore) Merge(k Key, p Policy, st State, now time.Time) {
	var buf [96]byte
	enc := k.appendTo(buf[:0])
	sh := &s.shards[maphash.Bytes(s.seed, enc)&s.mask]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if cur := sh.m[string(enc)]; cur != nil {
		cur.State = Merge(p, cur.State, st)
		if s.track && !cur.listed {
			sh.markChanged(string(enc), cur)
		}
		return
	}
	if st.IdleAt(now) {
		return
	}
	key, e := string(enc), &entry{State: st}
	s.insert(sh, key, e, now)
	if s.track {
		sh.markChanged(key, e)
	}
}

// Delete drops the counter of k, if any.
func (s *MemoryStore) Delete(k Key) {
	var buf [96]byte
	enc := k.appendTo(buf[:0])
	sh := &s.shards[maphash.Bytes(s.seed, enc)&s.mask]
	sh.mu.Lock()
	delete(sh.m, string(enc))
	sh.mu.Unlock()
}
