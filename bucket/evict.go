package bucket

import (
	"math"
	"time"
)

// EvictReason says why a counter left a full MemoryStore, or was not kept.
type EvictReason int

// The reasons of an eviction, from the cheapest to forget to the dearest.
// A full shard evicts its idle counters first, then those that count hits
// but would admit the next one, the fewest hits first, and a counter that
// is denying only when every counter of its shard is denying too: then a
// new counter that would not deny is not kept instead (EvictRefused), so
// that a flood of fresh keys never frees a used-up one.
const (
	EvictIdle     EvictReason = iota // the counter was idle: nothing forgiven
	EvictCounting                    // it counted hits but admitted the next
	EvictDenying                     // it was denying: its shard held nothing else
	EvictRefused                     // a new counter was not kept: every held one was denying
	evictReasons
)

var evictReasonNames = [...]string{"idle", "counting", "denying", "refused"}

// String returns the reason's name, as in metric labels.
func (r EvictReason) String() string {
	if r >= 0 && r < evictReasons {
		return evictReasonNames[r]
	}
	return "unknown"
}

// EvictReasons lists every reason, in order.
func EvictReasons() []EvictReason {
	return []EvictReason{EvictIdle, EvictCounting, EvictDenying, EvictRefused}
}

// worth is what forgetting a counter would forgive, as its last decision
// left it: the hits it counted, and the Unix second until which it denies
// (0 if it admitted the next hit). Both only overstate as time passes, so
// a counter is kept at least as long as it matters.
type worth struct {
	used  uint32
	until uint32
}

// denyingCost is the cost of the cheapest denying counter: above that of
// every counter that is not denying.
const denyingCost = 1 << 33

// worthOf is the worth of the counter st that decision d left.
func worthOf(d Decision, st *State, now time.Time) worth {
	w := worth{used: uint32(min(max(d.Limit-d.Remaining, 0), math.MaxUint32))}
	switch {
	case d.Remaining > 0:
	case !d.Allowed && d.RetryAfter > 0:
		w.until = ceilSecond(now.Add(d.RetryAfter).UnixMicro())
	default:
		// Used up by this check: it denies at most until it is idle.
		w.until = st.Idle
	}
	return w
}

// cost orders counters for eviction at the Unix second now: 0 for an idle
// counter, 1 + the hits it counts for one that admits the next hit, and
// denyingCost + the hits it counts for one that denies.
func (w worth) cost(st *State, now int64) uint64 {
	switch {
	case now >= int64(st.Idle):
		return 0
	case now < int64(w.until):
		return denyingCost + uint64(w.used)
	default:
		return 1 + uint64(w.used)
	}
}

// reasonOf is the reason of evicting a counter of cost c.
func reasonOf(c uint64) EvictReason {
	switch {
	case c == 0:
		return EvictIdle
	case c < denyingCost:
		return EvictCounting
	default:
		return EvictDenying
	}
}
