package topk

import (
	"sync"
	"time"
)

// Recent counts keys by epoch, in a ring of Sketches, to answer for the
// last few epochs. Memory: epochs+1 Sketches, allocated by NewRecent. It
// is safe for concurrent use.
type Recent struct {
	epoch time.Duration
	mu    sync.Mutex
	ring  []*Sketch
	at    []int64 // the epoch number each Sketch of ring counts
}

// NewRecent returns a Recent of epochs epochs of the given length: it
// answers for up to the last epochs epochs, the current one included.
func NewRecent(cfg Config, epoch time.Duration, epochs int) *Recent {
	epoch = max(epoch, time.Millisecond)
	epochs = max(epochs, 1)
	r := &Recent{epoch: epoch, ring: make([]*Sketch, epochs), at: make([]int64, epochs)}
	for i := range r.ring {
		r.ring[i] = NewSketch(cfg)
		r.at[i] = -1
	}
	return r
}

// RecentBytes is the memory a Recent of these sizes holds, in bytes.
func RecentBytes(cfg Config, epochs int) int { return max(epochs, 1) * cfg.Bytes() }

// Epochs is the number of epochs r answers for.
func (r *Recent) Epochs() int { return len(r.ring) }

// Epoch is the length of one epoch.
func (r *Recent) Epoch() time.Duration { return r.epoch }

// Add counts n occurrences of key at now, and returns the occurrences
// counted in now's epoch so far. It does not allocate.
func (r *Recent) Add(key string, n uint64, now time.Time) uint64 {
	e := now.UnixNano() / int64(r.epoch)
	i := int(e % int64(len(r.ring)))
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at[i] != e {
		if r.at[i] > e { // a clock that stepped back past a whole ring: dropped
			return 0
		}
		r.ring[i].Reset()
		r.at[i] = e
	}
	r.ring[i].Add(key, n)
	return r.ring[i].Total()
}

// Summary merges the last epochs epochs at now (the current, partly
// elapsed one and the epochs-1 before it) into a summary of at most size
// entries (no bound if size <= 0).
func (r *Recent) Summary(now time.Time, epochs, size int) Summary {
	e := now.UnixNano() / int64(r.epoch)
	epochs = min(max(epochs, 1), len(r.ring))
	sums := make([]Summary, 0, epochs)
	r.mu.Lock()
	for back := range int64(epochs) {
		i := int((e - back) % int64(len(r.ring)))
		if i < 0 || r.at[i] != e-back {
			continue
		}
		sums = append(sums, r.ring[i].Summary())
	}
	r.mu.Unlock()
	return Merge(size, sums...)
}
