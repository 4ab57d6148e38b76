package cluster

import (
	"log/slog"
	"sync"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// eventLog writes rate-limit events to the log at a capped rate, so a flood
// of denials (an attack) cannot flood the log. Lines over the cap are
// counted and reported in one summary line.
type eventLog struct {
	log        *slog.Logger
	cap        bucket.Policy
	mu         sync.Mutex
	state      bucket.State
	suppressed int64
}

func newEventLog(log *slog.Logger, perSecond int) *eventLog {
	return &eventLog{
		log: log,
		cap: bucket.Policy{Name: "log", Algorithm: bucket.TokenBucket, Limit: int64(perSecond), Window: time.Second},
	}
}

// allow reports whether one more line may be written at now and, if so,
// how many were suppressed before it.
func (e *eventLog) allow(now time.Time) (ok bool, suppressed int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !bucket.Take(e.cap, &e.state, 1, now).Allowed {
		e.suppressed++
		return false, 0
	}
	suppressed, e.suppressed = e.suppressed, 0
	return true, suppressed
}

func (e *eventLog) denied(policy, key string, hits int64, d bucket.Decision, now time.Time) {
	ok, suppressed := e.allow(now)
	if !ok {
		return
	}
	e.log.Info("rate limit exceeded",
		"policy", policy, "key", key, "hits", hits, "limit", d.Limit,
		"retry_after_ms", d.RetryAfter.Milliseconds(), "shadow", d.Shadowed,
		"suppressed_before", suppressed)
}

// flush reports how many lines were suppressed since the last flush.
func (e *eventLog) flush(now time.Time) {
	e.mu.Lock()
	n := e.suppressed
	e.suppressed = 0
	e.mu.Unlock()
	if n > 0 {
		e.log.Warn("rate limit events suppressed by the log cap", "suppressed", n)
	}
}
