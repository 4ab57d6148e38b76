package cluster

import "time"

// monoClock is the default clock: the wall time at the node's start plus
// the monotonic time elapsed since, read on every check (one vDSO read,
// about 20 ns; see docs/benchmarks.md). Each check's time is read during
// its own call, after it arrived and before it is decided, and the
// monotonic clock never goes back or jumps, so two checks decided on one
// node never see a gap longer than the real one, however the process is
// scheduled. A cached clock cannot promise that: a reader starved of its
// ticker gets a stale value and the next one a fresh value, and the gap
// between them looks longer than it was. A step of the system's wall
// clock after the start is not followed; the node's times stay its own.
type monoClock struct {
	base   time.Time // carries a monotonic reading
	baseUS int64     // base as Unix µs
}

func newMonoClock() *monoClock {
	b := time.Now()
	return &monoClock{base: b, baseUS: b.UnixMicro()}
}

// Now returns the current time in whole microseconds.
func (c *monoClock) Now() time.Time {
	return time.UnixMicro(c.baseUS + int64(time.Since(c.base)/time.Microsecond))
}
