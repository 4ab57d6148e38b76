// Package topk finds the most frequent keys of a stream in bounded memory,
// with the space-saving algorithm (Metwally, Agrawal and El Abbadi, 2005):
// a Sketch of m slots counts the keys it holds exactly from the moment
// they entered; a new key takes the slot of the least counted one and
// inherits its count as its possible error. So each reported Count is at
// least the key's true count and at most Error above it, Error is at most
// N/m for a stream of N, and every key whose true count exceeds N/m is
// held.
//
// Memory is fixed when a Sketch is made: Slots times (MaxKeyLen + 43)
// bytes. Adding a key never allocates: its bytes are copied into the
// slot, cut to MaxKeyLen. Recent keeps one Sketch per epoch (a minute, by
// default) to answer "the top keys of the last W epochs".
//
// # Usage
//
//	r := topk.NewRecent(topk.Config{}, time.Minute, 15)
//	r.Add("ip:203.0.113.7", 1, now)       // on each event
//	top := r.Top(now, 5, 10)              // the 10 top keys of the last 5 minutes
//
// The package imports only the standard library.
package topk

import (
	"cmp"
	"hash/maphash"
	"slices"
)

// Defaults for Config fields.
const (
	DefaultSlots     = 64
	DefaultMaxKeyLen = 64
)

// Config sizes a Sketch. Zero fields take the defaults in their comments.
type Config struct {
	// Slots is the number of keys a Sketch holds: its error bound is the
	// stream's length divided by Slots. Default: 64.
	Slots int
	// MaxKeyLen is the number of bytes of a key that a slot keeps; longer
	// keys are cut to it (Entry.Truncated), and keys that share those
	// bytes count as one. Default: 64; at most 65535.
	MaxKeyLen int
}

func (c Config) withDefaults() Config {
	if c.Slots <= 0 {
		c.Slots = DefaultSlots
	}
	if c.MaxKeyLen <= 0 {
		c.MaxKeyLen = DefaultMaxKeyLen
	}
	c.MaxKeyLen = min(c.MaxKeyLen, 1<<16-1)
	return c
}

// Bytes is the memory a Sketch of this Config holds, in bytes (its
// arrays; a few dozen bytes of headers besides).
func (c Config) Bytes() int {
	c = c.withDefaults()
	index := 1
	for index < 2*c.Slots {
		index <<= 1
	}
	return c.Slots*(c.MaxKeyLen+8+8+8+2+1+4+4) + index*4
}

// Entry is one key of a summary.
type Entry struct {
	// Key is the key, cut to Config.MaxKeyLen bytes.
	Key string `json:"key"`
	// Count is an upper bound of the key's true count.
	Count uint64 `json:"count"`
	// Error bounds the overcount: the true count is at least Count-Error.
	Error uint64 `json:"error"`
	// Truncated is true when Key was cut to Config.MaxKeyLen bytes.
	Truncated bool `json:"truncated,omitempty"`
}

// Sketch is a space-saving summary of a stream of keys. It is not safe
// for concurrent use. The zero Sketch is not usable: use NewSketch.
//
// A key is found through an open-addressing index of its hash, and the
// least counted key is the root of a min-heap of the slots, so that Add
// costs a hash, a probe or two, and a heap step, whatever the slots.
type Sketch struct {
	cfg    Config
	seed   maphash.Seed
	used   int
	hashes []uint64
	counts []uint64
	errs   []uint64
	lens   []uint16
	full   []bool  // the key was cut
	keys   []byte  // slot i holds keys[i*MaxKeyLen:][:lens[i]]
	index  []int32 // slot+1 by hash, linear probing; 0 is empty
	heap   []int32 // slots by count, least first
	pos    []int32 // slot → its place in heap
	total  uint64
}

// NewSketch returns an empty Sketch sized by cfg.
func NewSketch(cfg Config) *Sketch {
	cfg = cfg.withDefaults()
	size := 1
	for size < 2*cfg.Slots {
		size <<= 1
	}
	return &Sketch{
		cfg:    cfg,
		seed:   maphash.MakeSeed(),
		hashes: make([]uint64, cfg.Slots),
		counts: make([]uint64, cfg.Slots),
		errs:   make([]uint64, cfg.Slots),
		lens:   make([]uint16, cfg.Slots),
		full:   make([]bool, cfg.Slots),
		keys:   make([]byte, cfg.Slots*cfg.MaxKeyLen),
		index:  make([]int32, size),
		heap:   make([]int32, 0, cfg.Slots),
		pos:    make([]int32, cfg.Slots),
	}
}

// Add counts n occurrences of key. It does not allocate.
func (s *Sketch) Add(key string, n uint64) {
	if n == 0 {
		return
	}
	cut := len(key) > s.cfg.MaxKeyLen
	if cut {
		key = key[:s.cfg.MaxKeyLen]
	}
	s.total += n
	h := maphash.String(s.seed, key)
	p, i := s.find(h, key)
	if i >= 0 {
		s.counts[i] += n
		s.full[i] = s.full[i] || cut
		s.down(int(s.pos[i]))
		return
	}
	if s.used < len(s.hashes) {
		i = s.used
		s.used++
		s.counts[i], s.errs[i] = n, 0
		s.set(i, h, key, cut)
		s.index[p] = int32(i + 1)
		s.pos[i] = int32(len(s.heap))
		s.heap = append(s.heap, int32(i))
		s.up(len(s.heap) - 1)
		return
	}
	// Full: the least counted key gives its slot, and its count as the
	// newcomer's possible error.
	i = int(s.heap[0])
	s.unindex(i)
	s.errs[i] = s.counts[i]
	s.counts[i] += n
	s.set(i, h, key, cut)
	p, _ = s.find(h, key)
	s.index[p] = int32(i + 1)
	s.down(0)
}

func (s *Sketch) set(i int, h uint64, key string, cut bool) {
	s.hashes[i] = h
	s.lens[i] = uint16(copy(s.keys[i*s.cfg.MaxKeyLen:(i+1)*s.cfg.MaxKeyLen], key))
	s.full[i] = cut
}

// slotKey is the bytes of slot i's key.
func (s *Sketch) slotKey(i int) []byte {
	off := i * s.cfg.MaxKeyLen
	return s.keys[off : off+int(s.lens[i])]
}

// find returns the slot of key (or -1) and its place in the index (or
// the empty place where it would go).
func (s *Sketch) find(h uint64, key string) (place, slot int) {
	mask := len(s.index) - 1
	for p := int(h) & mask; ; p = (p + 1) & mask {
		e := s.index[p]
		if e == 0 {
			return p, -1
		}
		if i := int(e - 1); s.hashes[i] == h && string(s.slotKey(i)) == key { // compared without a copy
			return p, i
		}
	}
}

// unindex removes slot i from the index, shifting back the entries that
// probed past it (no tombstones).
func (s *Sketch) unindex(i int) {
	mask := len(s.index) - 1
	p := int(s.hashes[i]) & mask
	for s.index[p] != int32(i+1) {
		p = (p + 1) & mask
	}
	for q := p; ; {
		s.index[p] = 0
		for {
			q = (q + 1) & mask
			e := s.index[q]
			if e == 0 {
				return
			}
			home := int(s.hashes[e-1]) & mask
			// The entry at q stays unless its home is outside (p, q].
			if (p <= q && (home <= p || home > q)) || (p > q && home <= p && home > q) {
				s.index[p] = e
				p = q
				break
			}
		}
	}
}

// up and down restore the heap order from place k.
func (s *Sketch) up(k int) {
	for k > 0 {
		parent := (k - 1) / 2
		if s.counts[s.heap[parent]] <= s.counts[s.heap[k]] {
			return
		}
		s.swap(k, parent)
		k = parent
	}
}

func (s *Sketch) down(k int) {
	for {
		least, l := k, 2*k+1
		if l < len(s.heap) && s.counts[s.heap[l]] < s.counts[s.heap[least]] {
			least = l
		}
		if r := l + 1; r < len(s.heap) && s.counts[s.heap[r]] < s.counts[s.heap[least]] {
			least = r
		}
		if least == k {
			return
		}
		s.swap(k, least)
		k = least
	}
}

func (s *Sketch) swap(a, b int) {
	s.heap[a], s.heap[b] = s.heap[b], s.heap[a]
	s.pos[s.heap[a]] = int32(a)
	s.pos[s.heap[b]] = int32(b)
}

// Total is the number of occurrences added since the last Reset.
func (s *Sketch) Total() uint64 { return s.total }

// Reset empties the Sketch, keeping its memory.
func (s *Sketch) Reset() {
	s.used = 0
	s.total = 0
	s.heap = s.heap[:0]
	clear(s.index)
}

// Summary is what a Sketch (or a merge of several) knows: its entries and
// the most a key it does not list may have been counted.
func (s *Sketch) Summary() Summary {
	sum := Summary{Entries: make([]Entry, s.used), Total: s.total}
	for i := range s.used {
		sum.Entries[i] = Entry{Key: string(s.slotKey(i)), Count: s.counts[i], Error: s.errs[i], Truncated: s.full[i]}
	}
	if s.used == len(s.hashes) {
		sum.Floor = s.counts[s.heap[0]]
	}
	sortEntries(sum.Entries)
	return sum
}

// Summary is a mergeable top-k answer: Entries by Count, highest first.
type Summary struct {
	// Entries are the keys counted, by Count, highest first.
	Entries []Entry `json:"entries"`
	// Floor bounds the true count of any key not in Entries.
	Floor uint64 `json:"floor"`
	// Total is the stream's length.
	Total uint64 `json:"total"`
}

// Merge combines summaries of disjoint streams (several epochs, several
// nodes) into one of at most size entries (no bound if size <= 0). A key
// missing from a summary may still have been counted up to that summary's
// Floor there, so its Count includes that Floor and its Error too: the
// bounds of Entry still hold for the merged stream.
func Merge(size int, sums ...Summary) Summary {
	type acc struct {
		e    Entry
		seen uint64 // the Floors of the summaries that listed it
	}
	var floors uint64
	out := Summary{}
	byKey := map[string]*acc{}
	var order []*acc
	for _, s := range sums {
		floors += s.Floor
		out.Total += s.Total
		for _, e := range s.Entries {
			a := byKey[e.Key]
			if a == nil {
				a = &acc{e: Entry{Key: e.Key}}
				byKey[e.Key] = a
				order = append(order, a)
			}
			a.e.Count += e.Count
			a.e.Error += e.Error
			a.e.Truncated = a.e.Truncated || e.Truncated
			a.seen += s.Floor
		}
	}
	out.Entries = make([]Entry, len(order))
	for i, a := range order {
		e := a.e
		e.Count += floors - a.seen
		e.Error += floors - a.seen
		out.Entries[i] = e
	}
	sortEntries(out.Entries)
	out.Floor = floors
	if size > 0 && len(out.Entries) > size {
		// A dropped key's count bounds every key not listed.
		out.Floor = max(out.Floor, out.Entries[size].Count)
		out.Entries = out.Entries[:size]
	}
	return out
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
}

// Union combines summaries of streams whose keys are disjoint (the
// stripes of one stream split by key) into one of at most size entries
// (no bound if size <= 0). Unlike Merge it adds no Floor to a key's count:
// a key listed in one summary was never counted in the others.
func Union(size int, sums ...Summary) Summary {
	out := Summary{}
	for _, s := range sums {
		out.Entries = append(out.Entries, s.Entries...)
		out.Total += s.Total
		out.Floor = max(out.Floor, s.Floor)
	}
	sortEntries(out.Entries)
	if size > 0 && len(out.Entries) > size {
		out.Floor = max(out.Floor, out.Entries[size].Count)
		out.Entries = out.Entries[:size]
	}
	if out.Entries == nil {
		out.Entries = []Entry{}
	}
	return out
}
