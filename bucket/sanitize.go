package bucket

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalidState is wrapped by the errors of Sanitize.
var ErrInvalidState = errors.New("bucket: invalid state")

// Sanitize checks a state that came from elsewhere (a peer's hand-off or
// copy) against p, with the key's limit resolved (LimitFor), before it is
// merged: Merge keeps the more consumed of two states, so a state no node
// could have written would rotate real hits out (a time in the future) or
// lock the key (counts above the limit). It returns the state to merge,
// or an error wrapping ErrInvalidState when the state is impossible:
//
//   - a time further ahead of now than skew (plus, for gcra and
//     token_bucket, the capacity's span that a TAT may run ahead);
//   - a sliding or fixed window state, written under p's window, whose
//     time is not a slot's (window's) start, or that counts more hits than
//     p's limit, or a fixed window with hits outside its one counter.
//
// What it cannot tell from a valid state is made harmless: Idle is
// lowered to the latest second the state can matter at, and the counts
// of a gcra or token_bucket state, which Take ignores, are dropped.
// skew is the clock difference allowed between nodes. Sanitize is a pure
// function; p must be valid.
func Sanitize(p Policy, s State, now time.Time, skew time.Duration) (State, error) {
	t := now.UnixMicro() + skew.Microseconds()
	w := p.Window.Microseconds()
	bad := func(format string, args ...any) (State, error) {
		return State{}, fmt.Errorf("%w: %s", ErrInvalidState, fmt.Sprintf(format, args...))
	}
	switch p.Algorithm {
	case GCRA, TokenBucket:
		interval := w / p.Limit
		span := p.Capacity() * interval
		if s.T > t+span {
			return bad("TAT %d µs ahead of now, at most %d", s.T-now.UnixMicro(), span+skew.Microseconds())
		}
		s.Count, s.Span = [ring]uint32{}, 0
		s.Idle = min(s.Idle, ceilSecond(max(s.T, 0)))
		return s, nil
	}
	if s.T > t {
		return bad("time %d µs ahead of now", s.T-now.UnixMicro())
	}
	var sum uint64
	for _, c := range s.Count {
		sum += uint64(c)
	}
	if sum > uint64(p.Limit) {
		return bad("%d hits counted, limit %d", sum, p.Limit)
	}
	// end: when the last hit the state counts leaves, under the window it
	// was written under.
	end := s.T + w + w/Slots
	if s.Span != spanOf(p.Window) && s.Span != 0 {
		ws := int64(s.Span) * 1000
		end = s.T + ws + ws/Slots
	}
	if s.Span == spanOf(p.Window) {
		width := w / Slots
		if p.Algorithm == FixedWindow {
			width, end = w, s.T+w
		}
		switch {
		case s.T%width != 0:
			return bad("time %d is not the start of a %d µs slot", s.T, width)
		case p.Algorithm == FixedWindow && uint64(s.Count[0]) != sum:
			return bad("fixed window with hits outside its counter")
		}
	}
	s.Idle = min(s.Idle, ceilSecond(max(end, 0)))
	return s, nil
}
