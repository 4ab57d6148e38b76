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
	evictions atomic.Int64
}

type memShard struct {
	mu sync.Mutex
	m  map[string]*State
	_  [40]byte // keep shards on separate cache lines
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
	}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*State)
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
	st := sh.m[string(enc)]
	if st == nil {
		var fresh State
		d := Take(p, &fresh, hits, now)
		if fresh != (State{}) {
			s.insert(sh, string(enc), &fresh, now)
		}
		sh.mu.Unlock()
		return d, nil
	}
	d := Take(p, st, hits, now)
	sh.mu.Unlock()
	return d, nil
}

// insert adds a counter to a shard whose lock is held, evicting one if the
// shard is full.
func (s *MemoryStore) insert(sh *memShard, key string, st *State, now time.Time) {
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
			if ok && !fn(k, *v) {
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
		*cur = Merge(p, *cur, st)
		return
	}
	if st.IdleAt(now) {
		return
	}
	s.insert(sh, string(enc), &st, now)
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
