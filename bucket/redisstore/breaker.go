package redisstore

import (
	"sync"
	"sync/atomic"
	"time"
)

// The breaker's states.
const (
	breakerClosed   int32 = iota // checks go to Redis
	breakerOpen                  // checks fail at once until the cooldown ends
	breakerHalfOpen              // one check probes Redis; the others fail at once
)

// breaker is a circuit breaker: after threshold consecutive backend
// failures it opens, and checks fail at once instead of each waiting for a
// Redis that is down. After the cooldown, one check probes Redis (half-open):
// its success closes the breaker, its failure opens it for another cooldown.
// It is safe for concurrent use; the closed path is two atomic operations.
type breaker struct {
	threshold int64
	cooldown  time.Duration
	now       func() time.Time
	// onChange is called, outside the lock, when the breaker opens from
	// closed or closes.
	onChange func(open bool)

	state atomic.Int32
	fails atomic.Int64 // consecutive failures while closed

	mu       sync.Mutex
	openedAt time.Time
}

func newBreaker(threshold int, cooldown time.Duration, now func() time.Time, onChange func(open bool)) *breaker {
	return &breaker{threshold: int64(threshold), cooldown: cooldown, now: now, onChange: onChange}
}

// allow reports whether a check may go to Redis, and whether it is the
// half-open probe, which must report its outcome with done.
func (b *breaker) allow() (ok, probe bool) {
	if b.state.Load() == breakerClosed {
		return true, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case breakerClosed:
		return true, false
	case breakerOpen:
		if b.now().Sub(b.openedAt) >= b.cooldown {
			b.state.Store(breakerHalfOpen)
			return true, true
		}
	}
	return false, false
}

// success records a check that Redis answered.
func (b *breaker) success(probe bool) {
	if !probe {
		if b.fails.Load() != 0 {
			b.fails.Store(0)
		}
		if b.state.Load() == breakerClosed {
			return
		}
	}
	b.mu.Lock()
	closed := b.state.Load() != breakerClosed
	b.state.Store(breakerClosed)
	b.fails.Store(0)
	b.mu.Unlock()
	if closed && b.onChange != nil {
		b.onChange(false)
	}
}

// failure records a backend failure.
func (b *breaker) failure(probe bool) {
	if !probe && b.fails.Add(1) < b.threshold {
		return
	}
	b.mu.Lock()
	opened := false
	switch st := b.state.Load(); {
	case probe:
		b.state.Store(breakerOpen)
		b.openedAt = b.now()
	case st == breakerClosed && b.fails.Load() >= b.threshold:
		b.state.Store(breakerOpen)
		b.openedAt = b.now()
		opened = true
	}
	b.mu.Unlock()
	if opened && b.onChange != nil {
		b.onChange(true)
	}
}

// abandon records a probe that ended without telling anything about Redis
// (the caller's context ended first): the next check may probe at once.
func (b *breaker) abandon(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	if b.state.Load() == breakerHalfOpen {
		b.state.Store(breakerOpen)
		b.openedAt = b.now().Add(-b.cooldown)
	}
	b.mu.Unlock()
}

// isOpen reports whether checks are being refused.
func (b *breaker) isOpen() bool { return b.state.Load() != breakerClosed }
