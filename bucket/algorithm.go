package bucket

import "time"

// Slots is the number of sub-windows a sliding window is split into.
const Slots = 8

// ring is the number of slot counters a sliding window keeps: the Slots that
// make up one window, plus the slot that the rolling window partly overlaps.
const ring = Slots + 1

// State is the counter of one key, shared in layout by all algorithms
// (56 bytes). The zero value is a fresh counter.
type State struct {
	// T is a time in Unix microseconds: the start of the newest slot
	// (SlidingWindow), the start of the window (FixedWindow), or the
	// theoretical arrival time (GCRA, TokenBucket).
	T int64
	// Count holds hits per slot, indexed by slot number mod 9
	// (SlidingWindow), or the hits of the window in Count[0] (FixedWindow).
	Count [ring]uint32
	// Idle is the Unix second from which the state equals a fresh one, so a
	// store may drop it.
	Idle uint32
	// Span is the window in milliseconds (mod 2^32) that a sliding or fixed
	// window state was last written under, 0 for the other algorithms: a
	// policy edit that changes the window is noticed however the old and
	// new slots line up, and the counted hits are kept.
	Span uint32
}

// IdleAt reports whether the state equals a fresh one at now.
func (s *State) IdleAt(now time.Time) bool { return now.Unix() >= int64(s.Idle) }

// Take applies hits to s under p at now, updates s, and returns the
// decision. hits == 0 peeks: s is left as it is and Allowed says whether one
// hit would pass. p.Limit is the limit applied: resolve overrides with
// LimitFor first. Take is a pure function; p must be valid.
func Take(p Policy, s *State, hits int64, now time.Time) Decision {
	if hits <= 0 {
		c := *s
		s, hits = &c, 0
	}
	return take(p, s, hits, now)
}

// take is Take on s itself: with hits == 0 it writes s as a peek sees it
// (slots advanced, idle time renewed), which Refund builds on.
func take(p Policy, s *State, hits int64, now time.Time) Decision {
	t := now.UnixMicro()
	w := p.Window.Microseconds()
	switch p.Algorithm {
	case GCRA:
		return takeRated(s, t, w/p.Limit, p.Burst+1, hits)
	case TokenBucket:
		return takeRated(s, t, w/p.Limit, p.Limit+p.Burst, hits)
	case FixedWindow:
		return takeFixed(s, t, w, spanOf(p.Window), p.Limit, hits)
	default:
		return takeSliding(s, t, w, spanOf(p.Window), p.Limit, hits)
	}
}

// maxAhead is the furthest a TAT is taken to run ahead of now: 2^53 µs
// (285 years), up to which every integer is exact in a double. Validate
// keeps every span within it.
const maxAhead = 1 << 53

// spanOf is the State.Span of a window.
func spanOf(window time.Duration) uint32 { return uint32(window.Milliseconds()) }

// idleAt reports whether s equals a fresh state at t (Unix µs).
func idleAt(s *State, t int64) bool { return floorDiv(t, 1_000_000) >= int64(s.Idle) }

// takeRated is GCRA in its virtual-scheduling form: s.T is the theoretical
// arrival time (TAT). A fresh counter admits capacity hits at once, then one
// per interval. A token bucket of C tokens is the same with capacity C.
func takeRated(s *State, t, interval, capacity, hits int64) Decision {
	// A TAT is taken as at most maxAhead ahead of now. No policy's span
	// goes further (Validate), so this changes nothing but a state that a
	// run of policy edits left further ahead, which is denied either way;
	// it keeps every figure exact in the Redis script's doubles too.
	tat := min(max(s.T, t), t+maxAhead)
	span := capacity * interval // the most the TAT may run ahead of now
	need := max(hits, 1)
	d := Decision{Limit: capacity}
	switch {
	case need > capacity:
		// Can never pass; report the state as it is.
	case tat+need*interval-t <= span:
		d.Allowed = true
		if hits > 0 {
			tat += hits * interval
			// A rated state is its TAT alone: counts and span of a window
			// it was before (a policy edit) are gone.
			s.T, s.Count, s.Span = tat, [ring]uint32{}, 0
		}
	default:
		d.RetryAfter = us(tat + need*interval - t - span)
	}
	d.Remaining = max(0, (span-(tat-t))/interval)
	d.ResetAfter = us(tat - t)
	if need > capacity {
		d.RetryAfter = d.ResetAfter
	}
	s.Idle = ceilSecond(tat)
	return d
}

// takeSliding counts the hits of the ring slots that overlap the rolling
// window (t-window, t]. The counted set contains that window and lies within
// (t-window-slot, t], so the limit holds in every rolling window and a hit is
// counted for at most window + window/Slots.
func takeSliding(s *State, t, window int64, span uint32, limit, hits int64) Decision {
	width := window / Slots
	cur := floorDiv(t, width)
	if s.Span != span || s.T%width != 0 {
		resizeSliding(s, t, cur, width, span)
	}
	newest := floorDiv(s.T, width)
	switch {
	case cur >= newest+ring:
		s.Count = [ring]uint32{}
	case cur > newest:
		for k := newest + 1; k <= cur; k++ {
			s.Count[slot(k)] = 0
		}
	default:
		cur = newest // the clock went back: count into the newest slot
	}
	s.T = cur * width
	var sum int64
	for _, c := range s.Count {
		sum += int64(c)
	}
	need := max(hits, 1)
	d := Decision{Limit: limit}
	switch {
	case need > limit:
	case sum+need <= limit:
		d.Allowed = true
		s.Count[slot(cur)] += uint32(hits)
		sum += hits
	default:
		// Slot k leaves the counted set at the start of slot k+ring.
		rest := sum
		for k := cur - Slots; k <= cur; k++ {
			rest -= int64(s.Count[slot(k)])
			if rest+need <= limit {
				d.RetryAfter = us((k+ring)*width - t)
				break
			}
		}
	}
	d.Remaining = max(0, limit-sum)
	s.Idle = ceilSecond(t)
	for k := cur; k >= cur-Slots; k-- {
		if s.Count[slot(k)] != 0 {
			end := (k + ring) * width
			d.ResetAfter = us(end - t)
			s.Idle = ceilSecond(end)
			break
		}
	}
	if need > limit {
		d.RetryAfter = d.ResetAfter
	}
	return d
}

// resizeSliding takes a state that is fresh, of another algorithm, or was
// written under another window size (a policy edit) to the slots of width.
// An idle one starts afresh; otherwise all its counted hits go into the
// current slot (or its own newest, if the clock went back). Every one of
// those hits happened by now, so none is forgotten before the new window
// has passed over it; the price is that one may be counted up to a new
// window longer than a sliding log would, once, after an edit.
func resizeSliding(s *State, t, cur, width int64, span uint32) {
	if idleAt(s, t) {
		*s = State{Span: span}
		return
	}
	n := max(cur, floorDiv(s.T, width))
	var sum uint64
	for _, c := range s.Count {
		sum += uint64(c)
	}
	s.Count = [ring]uint32{}
	s.Count[slot(n)] = uint32(min(sum, MaxCount))
	s.T, s.Span = n*width, span
}

// takeFixed counts hits per epoch-aligned window.
func takeFixed(s *State, t, window int64, span uint32, limit, hits int64) Decision {
	start := floorDiv(t, window) * window
	switch {
	case s.Span != span || s.T%window != 0:
		// Fresh, of another algorithm, or written under another window size:
		// unless idle, its hits happened by now and may lie in the current
		// window, so they are kept, in it (or in its own, if the clock went
		// back).
		var sum uint64
		if !idleAt(s, t) {
			for _, c := range s.Count {
				sum += uint64(c)
			}
		}
		s.Count = [ring]uint32{uint32(min(sum, MaxCount))}
		s.T, s.Span = max(start, floorDiv(s.T, window)*window), span
	case start > s.T:
		s.T, s.Count[0] = start, 0
	}
	count := int64(s.Count[0])
	end := s.T + window
	need := max(hits, 1)
	d := Decision{Limit: limit}
	switch {
	case need > limit:
	case count+need <= limit:
		d.Allowed = true
		count += hits
		s.Count[0] = uint32(count)
	default:
		d.RetryAfter = us(end - t)
	}
	d.Remaining = max(0, limit-count)
	s.Idle = ceilSecond(t)
	if count > 0 {
		d.ResetAfter = us(end - t)
		s.Idle = ceilSecond(end)
	}
	if need > limit {
		d.RetryAfter = d.ResetAfter
	}
	return d
}

// Merge combines two states of the same key under p, keeping the more
// consumed one: the later TAT, the later or fuller fixed window, and the
// larger count of each sliding slot. It is how a node that takes over a key
// folds in the state handed to it.
func Merge(p Policy, a, b State) State {
	switch p.Algorithm {
	case GCRA, TokenBucket:
		if b.T > a.T {
			return b
		}
		return a
	case FixedWindow:
		if span := spanOf(p.Window); a.Span != span || b.Span != span {
			return fuller(a, b)
		}
		if b.T > a.T || (b.T == a.T && b.Count[0] > a.Count[0]) {
			return b
		}
		return a
	}
	width := p.Window.Microseconds() / Slots
	if span := spanOf(p.Window); a.Span != span || b.Span != span || a.T%width != 0 || b.T%width != 0 {
		return fuller(a, b)
	}
	if a.T < b.T {
		a, b = b, a
	}
	// Advance b to a's newest slot, then keep the larger count per slot.
	cur := floorDiv(a.T, width)
	nb := floorDiv(b.T, width)
	for k := nb + 1; k <= min(cur, nb+ring); k++ {
		b.Count[slot(k)] = 0
	}
	if cur-nb >= ring {
		b.Count = [ring]uint32{}
	}
	for i := range a.Count {
		a.Count[i] = max(a.Count[i], b.Count[i])
	}
	a.Idle = max(a.Idle, b.Idle)
	return a
}

// fuller returns the one of two window states written under different
// window sizes that counts more hits (a on a tie), idle when both are: one
// under another size is resized on its next take.
func fuller(a, b State) State {
	var na, nb uint64
	for i := range a.Count {
		na += uint64(a.Count[i])
		nb += uint64(b.Count[i])
	}
	if nb > na {
		a, b = b, a
	}
	a.Idle = max(a.Idle, b.Idle)
	return a
}

func slot(k int64) int { return int(((k % ring) + ring) % ring) }

// floorDiv is a/b rounded toward minus infinity, for b > 0.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func us(n int64) time.Duration { return time.Duration(n) * time.Microsecond }

func ceilSecond(us int64) uint32 {
	s := floorDiv(us+999_999, 1_000_000)
	return uint32(min(max(s, 0), 1<<32-1))
}
