package bucket

import (
	"context"
	"hash/maphash"
	"math"
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
	// share (MaxKeys/Shards) and a new key arrives, a counter is evicted:
	// the one whose loss forgives the fewest hits (see Evicted). Default:
	// DefaultMaxKeys.
	MaxKeys int
	// TrackChanges makes the store list the counters that moved since the
	// last call of Changed, so that a cluster node can copy them to a
	// replica. A counter is listed once the hits it admitted since it was
	// last listed reach CopyEvery of its policy: every admitted hit below
	// a capacity of 2048 and with ReplicateSync, one in capacity/1024
	// above. A Merge, a Refund and MarkChanged list it at once. So a copy
	// made from the list lags its counter by less than CopyEvery hits plus
	// what was admitted since the last Changed. The list holds each such
	// counter until Changed runs; NotifyChanged tells when it is no longer
	// empty. Default: off.
	TrackChanges bool
}

// DefaultMaxKeys is the default MemoryConfig.MaxKeys: 4,194,304 counters.
const DefaultMaxKeys = 1 << 22

// evictSample is the number of counters an eviction looks at, at least:
// if all of them are denying, it looks further (see Evicted).
const evictSample = 8

// MemoryStore keeps counters in memory. It is safe for concurrent use: keys
// are spread over shards, each with its own lock, and no lock spans shards.
//
// A shard keeps its counters in fixed-size slots that hold no pointers: the
// state, what evicting it would forgive, and the encoded key inline up to
// inlineKey bytes (longer keys in the shard's byte arena). An open-
// addressing index of hashes finds a key's slot. So the garbage collector
// has nothing to scan in a store of millions of keys, and a key costs its
// 96-byte slot and about 16 bytes of index (see docs/architecture.md).
type MemoryStore struct {
	shards   []memShard
	mask     uint64
	perShard int
	seed     maphash.Seed
	track    bool
	keys     atomic.Int64
	evicted  [evictReasons]atomic.Int64
	// dirty has a bit per shard whose changed list may hold counters, so
	// that Changed visits those alone: finding what changed costs what
	// changed, not a pass over every shard.
	dirty []atomic.Uint64
	// notify, when set, is called when a shard's changed list gets its
	// first counter since Changed last took it.
	notify atomic.Pointer[func()]
}

var _ Store = (*MemoryStore)(nil)

// inlineKey is the longest encoded key a slot holds itself: a policy name
// of 7 bytes and an ID of 15 fit.
const inlineKey = 23

// cell is the slot of one counter (96 bytes, no pointers).
type cell struct {
	State
	worth
	klen uint32 // length of the encoded key
	// since is the hits admitted since the counter was last listed
	// (TrackChanges), short of its policy's CopyEvery.
	since uint32
	flags uint8
	// key is the encoded key if it fits, else its offset in the arena
	// (little-endian, in the first 4 bytes).
	key [inlineKey]byte
}

// Slot flags.
const (
	slotLive   = 1 << iota // the slot holds a counter
	slotListed             // the counter is on its shard's changed list
)

// Slots are allocated in chunks of chunkSize, never moved once full; a
// shard's first chunk grows from minChunk, so that small stores stay small.
const (
	chunkBits = 10
	chunkSize = 1 << chunkBits
	minChunk  = 8
)

// memShard is one locked part of the store.
type memShard struct {
	mu sync.Mutex
	id int // the shard's place in MemoryStore.shards
	// index is an open-addressing (linear probing) table of the shard's
	// counters: each entry is the upper 32 bits of the key's hash, which
	// also give its home position, and its slot number + 1; 0 is empty.
	index  []uint64
	chunks [][]cell
	next   uint32   // slots handed out so far: the used part of chunks
	free   []uint32 // slot numbers below next that hold no counter
	n      int      // counters held
	// arena holds the keys longer than inlineKey; dead counts its bytes
	// whose counter is gone, reclaimed when they are half of it.
	arena []byte
	dead  int
	// changed lists, with TrackChanges, the slots changed since Changed;
	// a slot freed or reused meanwhile is told by its flags.
	changed []uint32
	// allDenying is the Unix second until which every counter of the full
	// shard is known to deny: a new counter that would not deny is not
	// kept before then, without a look at the others.
	allDenying int64
}

// NewMemoryStore returns an empty store.
func NewMemoryStore(cfg MemoryConfig) *MemoryStore {
	if cfg.Shards <= 0 {
		cfg.Shards = 256
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	n := 1 << bits.Len(uint(cfg.Shards-1))
	s := &MemoryStore{
		shards:   make([]memShard, n),
		mask:     uint64(n - 1),
		perShard: max(1, cfg.MaxKeys/n),
		seed:     maphash.MakeSeed(),
		track:    cfg.TrackChanges,
		dirty:    make([]atomic.Uint64, (n+63)/64),
	}
	for i := range s.shards {
		s.shards[i].id = i
	}
	return s
}

// CopyEvery is how many admitted hits of a counter under p make it listed
// as changed (MemoryConfig.TrackChanges): 1 below a capacity of 2048 and
// with ReplicateSync, where one hit matters, and capacity/1024 above
// (at most 2^32-1), so that a counter of a large limit is copied once per
// 1/1024 of it, not on every hit. p.Limit is the limit applied.
func CopyEvery(p *Policy) int64 {
	if p.Replication == ReplicateSync {
		return 1
	}
	return min(max(1, p.Capacity()/1024), math.MaxUint32)
}

// Take implements Store. It never returns an error.
func (s *MemoryStore) Take(_ context.Context, k Key, p Policy, hits int64, now time.Time) (Decision, error) {
	var buf [96]byte
	enc := k.appendTo(buf[:0])
	h := maphash.Bytes(s.seed, enc)
	sh := &s.shards[h&s.mask]
	p.Limit = p.LimitFor(k.ID)
	sh.mu.Lock()
	if _, n, ok := sh.find(h, enc); ok {
		e := sh.at(n)
		d := Take(p, &e.State, hits, now)
		e.worth = worthOf(d, &e.State, now)
		// With TrackChanges, admitted hits list the counter (once until
		// Changed takes it) when they reach CopyEvery.
		if s.track && d.Allowed && hits > 0 && e.flags&slotListed == 0 {
			s.countHits(sh, n, e, hits, &p)
		}
		sh.mu.Unlock()
		return d, nil
	}
	var st State
	d := Take(p, &st, hits, now)
	if st != (State{}) {
		if n, ok := s.insert(sh, h, enc, st, worthOf(d, &st, now), now); ok && s.track && d.Allowed && hits > 0 {
			s.countHits(sh, n, sh.at(n), hits, &p)
		}
	}
	sh.mu.Unlock()
	return d, nil
}

// countHits adds hits admitted under p to the unlisted slot n, e, and
// lists it once they reach CopyEvery(p); the lock is held.
func (s *MemoryStore) countHits(sh *memShard, n uint32, e *cell, hits int64, p *Policy) {
	if since := int64(e.since) + hits; since < CopyEvery(p) {
		e.since = uint32(since)
		return
	}
	s.markChanged(sh, n, e)
}

// markChanged puts slot n, e, on the shard's changed list and marks the
// shard dirty; the lock is held.
func (s *MemoryStore) markChanged(sh *memShard, n uint32, e *cell) {
	e.flags |= slotListed
	e.since = 0
	sh.changed = append(sh.changed, n)
	if len(sh.changed) > 1 {
		return // the shard is dirty since its first one
	}
	bit := uint64(1) << (sh.id & 63)
	if s.dirty[sh.id>>6].Or(bit)&bit == 0 {
		if fn := s.notify.Load(); fn != nil {
			(*fn)()
		}
	}
}

// NotifyChanged makes the store call fn (with a shard's lock held, so fn
// must not call the store, nor block) when a counter is listed as changed
// and the list was empty before, as far as Changed last saw it: at most
// once per shard between two calls of Changed. A cluster node wakes its
// copy loop with it only when a copy is due.
func (s *MemoryStore) NotifyChanged(fn func()) { s.notify.Store(&fn) }

// MarkChanged lists the counter of k as changed at once, if the store
// holds it and tracks changes: for a change made outside Take, such as a
// lease or hits folded back, whose copy must not wait for CopyEvery hits.
func (s *MemoryStore) MarkChanged(k Key) {
	if !s.track {
		return
	}
	var buf [96]byte
	enc := k.appendTo(buf[:0])
	h := maphash.Bytes(s.seed, enc)
	sh := &s.shards[h&s.mask]
	sh.mu.Lock()
	if _, n, ok := sh.find(h, enc); ok {
		if e := sh.at(n); e.flags&slotListed == 0 {
			s.markChanged(sh, n, e)
		}
	}
	sh.mu.Unlock()
}

// Tracking reports whether the store tracks changed counters
// (MemoryConfig.TrackChanges).
func (s *MemoryStore) Tracking() bool { return s.track }

// Changed calls fn with each counter listed as changed since the last call
// (see MemoryConfig.TrackChanges), once each and as it is now, one shard
// at a time, and forgets them. fn must not call the store. Without
// TrackChanges there are none.
func (s *MemoryStore) Changed(fn func(k Key, st State)) {
	for w := range s.dirty {
		for word := s.dirty[w].Swap(0); word != 0; word &= word - 1 {
			s.drain(&s.shards[w<<6|bits.TrailingZeros64(word)], fn)
		}
	}
}

// drain calls fn with the counters on sh's changed list and empties it.
func (s *MemoryStore) drain(sh *memShard, fn func(k Key, st State)) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, n := range sh.changed {
		e := sh.at(n)
		if e.flags&(slotLive|slotListed) != slotLive|slotListed {
			continue // freed, or listed twice after a reuse
		}
		e.flags &^= slotListed
		if k, ok := decodeKey(string(sh.keyOf(e))); ok {
			fn(k, e.State)
		}
	}
	sh.changed = sh.changed[:0]
}

// at returns slot n.
func (sh *memShard) at(n uint32) *cell { return &sh.chunks[n>>chunkBits][n&(chunkSize-1)] }

// keyOf returns the encoded key of a live slot.
func (sh *memShard) keyOf(e *cell) []byte {
	if e.klen <= inlineKey {
		return e.key[:e.klen]
	}
	off := arenaOffset(e)
	return sh.arena[off : off+int(e.klen)]
}

func arenaOffset(e *cell) int {
	return int(uint32(e.key[0]) | uint32(e.key[1])<<8 | uint32(e.key[2])<<16 | uint32(e.key[3])<<24)
}

// find returns the index position and slot number of the key enc of hash
// h.
func (sh *memShard) find(h uint64, enc []byte) (pos int, n uint32, ok bool) {
	if len(sh.index) == 0 {
		return 0, 0, false
	}
	mask := len(sh.index) - 1
	tag := h >> 32
	for i := int(tag) & mask; ; i = (i + 1) & mask {
		v := sh.index[i]
		if v == 0 {
			return 0, 0, false
		}
		if v>>32 == tag {
			n := uint32(v) - 1
			if e := sh.at(n); int(e.klen) == len(enc) && string(sh.keyOf(e)) == string(enc) {
				return i, n, true
			}
		}
	}
}

// positionOf returns the index position of slot n, whose key hashes to h.
func (sh *memShard) positionOf(h uint64, n uint32) int {
	mask := len(sh.index) - 1
	want := h>>32<<32 | uint64(n+1)
	for i := int(h>>32) & mask; ; i = (i + 1) & mask {
		if sh.index[i] == want {
			return i
		}
	}
}

// insert adds a counter for the key enc (hash h) to a shard whose lock is
// held, evicting one if the shard is full, and returns its slot number and
// whether it was kept (see Evicted).
func (s *MemoryStore) insert(sh *memShard, h uint64, enc []byte, st State, w worth, now time.Time) (uint32, bool) {
	if sh.n >= s.perShard {
		sec := now.Unix()
		cost := w.cost(&st, sec)
		if sec < sh.allDenying && cost < denyingCost {
			s.evicted[EvictRefused].Add(1)
			return 0, false
		}
		victim, least, until := sh.cheapest(h, sec)
		if least >= denyingCost {
			// Every counter of the shard is denying.
			sh.allDenying = until
			if cost < denyingCost {
				s.evicted[EvictRefused].Add(1)
				return 0, false
			}
		}
		s.remove(sh, victim)
		s.evicted[reasonOf(least)].Add(1)
	}
	if len(enc) > inlineKey && len(sh.arena)+len(enc) > math.MaxUint32 {
		s.evicted[EvictRefused].Add(1) // the arena's offsets are 32 bits
		return 0, false
	}
	n := sh.alloc()
	e := sh.at(n)
	*e = cell{State: st, worth: w, klen: uint32(len(enc)), flags: slotLive}
	if len(enc) <= inlineKey {
		copy(e.key[:], enc)
	} else {
		off := uint32(len(sh.arena))
		e.key[0], e.key[1], e.key[2], e.key[3] = byte(off), byte(off>>8), byte(off>>16), byte(off>>24)
		sh.arena = append(sh.arena, enc...)
	}
	if (sh.n+1)*4 > len(sh.index)*3 {
		sh.grow()
	}
	sh.place(h>>32<<32 | uint64(n+1))
	sh.n++
	s.keys.Add(1)
	return n, true
}

// cheapest returns the slot of the counter whose eviction at the Unix
// second now costs least, and that cost. It looks at evictSample live
// slots from a place the hash h picks, and on while all it saw deny; until
// is the earliest second one of those denying counters stops denying.
func (sh *memShard) cheapest(h uint64, now int64) (victim uint32, least uint64, until int64) {
	until = math.MaxInt64
	seen := 0
	start := uint32((h >> 16) % uint64(sh.next))
	for j := range sh.next {
		n := start + j
		if n >= sh.next {
			n -= sh.next
		}
		e := sh.at(n)
		if e.flags&slotLive == 0 {
			continue
		}
		c := e.cost(&e.State, now)
		if seen == 0 || c < least {
			victim, least = n, c
		}
		if c >= denyingCost {
			until = min(until, int64(e.until))
		}
		seen++
		if least == 0 || (seen >= evictSample && least < denyingCost) {
			break
		}
	}
	return victim, least, until
}

// alloc returns a free slot number, growing the slots if none is free.
func (sh *memShard) alloc() uint32 {
	if k := len(sh.free); k > 0 {
		n := sh.free[k-1]
		sh.free = sh.free[:k-1]
		return n
	}
	n := sh.next
	c := int(n >> chunkBits)
	switch {
	case c == len(sh.chunks):
		size := chunkSize
		if c == 0 {
			size = minChunk
		}
		sh.chunks = append(sh.chunks, make([]cell, size))
	case c == 0 && int(n) == len(sh.chunks[0]):
		grown := make([]cell, min(2*len(sh.chunks[0]), chunkSize))
		copy(grown, sh.chunks[0])
		sh.chunks[0] = grown
	}
	sh.next++
	return n
}

// grow doubles the index.
func (sh *memShard) grow() {
	old := sh.index
	sh.index = make([]uint64, max(16, 2*len(old)))
	for _, v := range old {
		if v != 0 {
			sh.place(v)
		}
	}
}

// place puts index entry v at the first empty position from its home.
func (sh *memShard) place(v uint64) {
	mask := len(sh.index) - 1
	i := int(v>>32) & mask
	for sh.index[i] != 0 {
		i = (i + 1) & mask
	}
	sh.index[i] = v
}

// remove drops the counter of slot n from a shard whose lock is held.
func (s *MemoryStore) remove(sh *memShard, n uint32) {
	e := sh.at(n)
	key := sh.keyOf(e)
	sh.unindex(sh.positionOf(maphash.Bytes(s.seed, key), n))
	if e.klen > inlineKey {
		sh.dead += int(e.klen)
	}
	*e = cell{}
	sh.free = append(sh.free, n)
	sh.n--
	s.keys.Add(-1)
	if sh.dead > 4096 && 2*sh.dead > len(sh.arena) {
		sh.compactArena()
	}
}

// unindex empties index position i, shifting back the entries after it
// that it kept from their home (linear probing needs no tombstones).
func (sh *memShard) unindex(i int) {
	mask := len(sh.index) - 1
	for j := (i + 1) & mask; sh.index[j] != 0; j = (j + 1) & mask {
		home := int(sh.index[j]>>32) & mask
		if (j-home)&mask >= (j-i)&mask {
			sh.index[i] = sh.index[j]
			i = j
		}
	}
	sh.index[i] = 0
}

// compactArena copies the keys still held into a new arena.
func (sh *memShard) compactArena() {
	arena := make([]byte, 0, len(sh.arena)-sh.dead)
	for n := range sh.next {
		e := sh.at(n)
		if e.flags&slotLive == 0 || e.klen <= inlineKey {
			continue
		}
		key := sh.keyOf(e)
		off := uint32(len(arena))
		e.key[0], e.key[1], e.key[2], e.key[3] = byte(off), byte(off>>8), byte(off>>16), byte(off>>24)
		arena = append(arena, key...)
	}
	sh.arena, sh.dead = arena, 0
}

// Sweep implements Store: it drops every counter that is idle at now.
func (s *MemoryStore) Sweep(now time.Time) int {
	dropped := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for n := range sh.next {
			if e := sh.at(n); e.flags&slotLive != 0 && e.IdleAt(now) {
				s.remove(sh, n)
				dropped++
			}
		}
		sh.mu.Unlock()
	}
	return dropped
}

// Len returns the number of counters held.
func (s *MemoryStore) Len() int { return int(s.keys.Load()) }

// MaxKeys returns the bound on the counters held (MemoryConfig.MaxKeys,
// rounded down to a multiple of the shards).
func (s *MemoryStore) MaxKeys() int { return s.perShard * len(s.shards) }

// Evictions returns how many counters were evicted or not kept to respect
// MaxKeys, for every reason.
func (s *MemoryStore) Evictions() int64 {
	var n int64
	for i := range s.evicted {
		n += s.evicted[i].Load()
	}
	return n
}

// Evicted returns how many counters were evicted, or not kept, for
// reason (EvictIdle, EvictCounting, EvictDenying or EvictRefused).
func (s *MemoryStore) Evicted(reason EvictReason) int64 {
	if reason < 0 || reason >= evictReasons {
		return 0
	}
	return s.evicted[reason].Load()
}

// Range calls fn for each counter that is not idle at now, one shard at a
// time, until fn returns false. fn must not call the store.
func (s *MemoryStore) Range(now time.Time, fn func(k Key, st State) bool) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for n := range sh.next {
			e := sh.at(n)
			if e.flags&slotLive == 0 || e.IdleAt(now) {
				continue
			}
			k, ok := decodeKey(string(sh.keyOf(e)))
			if ok && !fn(k, e.State) {
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
	h := maphash.Bytes(s.seed, enc)
	sh := &s.shards[h&s.mask]
	p.Limit = p.LimitFor(k.ID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, n, ok := sh.find(h, enc); ok {
		e := sh.at(n)
		e.State = Merge(p, e.State, st)
		peek := e.State
		e.worth = worthOf(Take(p, &peek, 0, now), &e.State, now)
		if s.track && e.flags&slotListed == 0 {
			s.markChanged(sh, n, e)
		}
		return
	}
	if st.IdleAt(now) {
		return
	}
	peek := st
	w := worthOf(Take(p, &peek, 0, now), &st, now)
	if n, ok := s.insert(sh, h, enc, st, w, now); ok && s.track {
		s.markChanged(sh, n, sh.at(n))
	}
}

// Delete drops the counter of k, if any.
func (s *MemoryStore) Delete(k Key) {
	var buf [96]byte
	enc := k.appendTo(buf[:0])
	h := maphash.Bytes(s.seed, enc)
	sh := &s.shards[h&s.mask]
	sh.mu.Lock()
	if _, n, ok := sh.find(h, enc); ok {
		s.remove(sh, n)
	}
	sh.mu.Unlock()
}
