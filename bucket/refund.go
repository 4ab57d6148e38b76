package bucket

import (
	"context"
	"hash/maphash"
	"math"
	"time"
)

// RefundAll, as the hits of a refund, gives back every hit: the counter
// is reset to a fresh one.
const RefundAll int64 = math.MaxInt64

// Refund gives hits back to the counter s under p at now, as if that many
// fewer had been admitted, and returns the decision a peek would then get.
// A counter never goes below a fresh one, so a refund never lets more
// through than a fresh counter would; and a refund of the hits a Take just
// admitted, at the same time, restores the decisions that follow.
//
// A sliding window gives back the newest hits first (those of the current
// slot, then older ones), a fixed window from its current window, and GCRA
// and the token bucket move their TAT back by hits intervals, never before
// now. hits <= 0 refunds nothing; RefundAll resets s, as does a refund of
// everything a GCRA or token-bucket counter holds. p.Limit is the limit
// applied (see Take); Refund is a pure function; p must be valid.
func Refund(p Policy, s *State, hits int64, now time.Time) Decision {
	switch {
	case hits <= 0:
		return Take(p, s, 0, now)
	case hits == RefundAll:
		*s = State{}
		return Take(p, s, 0, now)
	}
	t := now.UnixMicro()
	w := p.Window.Microseconds()
	c := *s
	given := false
	switch p.Algorithm {
	case GCRA, TokenBucket:
		given = refundRated(&c, t, w/p.Limit, hits)
	case FixedWindow:
		take(p, &c, 0, now) // to the current window
		given = c.Count[0] > 0
		c.Count[0] = uint32(max(0, int64(c.Count[0])-hits))
	default:
		take(p, &c, 0, now) // slots advanced to now
		cur := floorDiv(c.T, w/Slots)
		for k := cur; k > cur-ring && hits > 0; k-- {
			n := int64(c.Count[slot(k)])
			g := min(n, hits)
			c.Count[slot(k)] = uint32(n - g)
			hits -= g
			given = given || g > 0
		}
	}
	if !given {
		// Nothing to give back: s stays as it is.
		return Take(p, s, 0, now)
	}
	*s = c
	if s.T == 0 && s.Count == [ring]uint32{} {
		return Take(p, s, 0, now) // fresh, as a deleted counter
	}
	return take(p, s, 0, now)
}

// refundRated moves a TAT back by hits intervals, to now at the earliest,
// where the counter is fresh. It reports whether there was anything to
// give back. A TAT of 0 is a fresh counter's, even before 1970.
func refundRated(s *State, t, interval, hits int64) bool {
	if s.T <= t || s.T == 0 {
		return false // every hit admitted is paid back by time already
	}
	tat := min(s.T, t+maxAhead)
	if hits >= (tat-t+interval-1)/interval {
		*s = State{}
	} else {
		s.T = tat - hits*interval
	}
	return true
}

// Refunder is a Store that can give hits back and reset counters. The
// memory and Redis stores are Refunders; a cluster node routes a refund to
// the key's owner as it does a check.
type Refunder interface {
	// Refund gives hits back to the counter of k under p at now (see the
	// package function Refund) and returns the decision a peek would then
	// get. hits == RefundAll resets the counter: it is deleted. The error
	// reports a backend failure only.
	Refund(ctx context.Context, k Key, p Policy, hits int64, now time.Time) (Decision, error)
}

var _ Refunder = (*MemoryStore)(nil)

// Refund implements Refunder. It never returns an error. A reset drops the
// counter; one that a refund leaves idle goes with the next Sweep.
func (s *MemoryStore) Refund(_ context.Context, k Key, p Policy, hits int64, now time.Time) (Decision, error) {
	var buf [96]byte
	enc := k.appendTo(buf[:0])
	h := maphash.Bytes(s.seed, enc)
	sh := &s.shards[h&s.mask]
	p.Limit = p.LimitFor(k.ID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, n, ok := sh.find(h, enc)
	if !ok || hits == RefundAll {
		if ok {
			s.remove(sh, n)
		}
		var fresh State
		return take(p, &fresh, 0, now), nil
	}
	e := sh.at(n)
	d := Refund(p, &e.State, hits, now)
	peek := e.State
	e.worth = worthOf(Take(p, &peek, 0, now), &e.State, now)
	if s.track && e.flags&slotListed == 0 {
		s.markChanged(sh, n, e) // its copy would count the refunded hits
	}
	return d, nil
}
