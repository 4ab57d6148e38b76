package cluster

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// capLog writes log lines at a capped rate, so a flood of events (an
// attack, an unreachable peer under load) cannot flood the log. Lines over
// the cap are counted, and the next line written says how many were
// suppressed before it.
type capLog struct {
	log        *slog.Logger
	level      slog.Level
	cap        bucket.Policy
	mu         sync.Mutex
	state      bucket.State
	suppressed int64
}

func newCapLog(log *slog.Logger, level slog.Level, perSecond int) *capLog {
	return &capLog{
		log:   log,
		level: level,
		cap:   bucket.Policy{Name: "log", Algorithm: bucket.TokenBucket, Limit: int64(perSecond), Window: time.Second},
	}
}

// allow reports whether one more line may be written at now and, if so,
// how many were suppressed before it.
func (c *capLog) allow(now time.Time) (ok bool, suppressed int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !bucket.Take(c.cap, &c.state, 1, now).Allowed {
		c.suppressed++
		return false, 0
	}
	suppressed, c.suppressed = c.suppressed, 0
	return true, suppressed
}

// write logs msg unless the cap is reached.
func (c *capLog) write(now time.Time, msg string, args ...any) {
	ok, suppressed := c.allow(now)
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed_before", suppressed)
	}
	c.log.Log(context.Background(), c.level, msg, args...)
}

// warn is write for warnings.
func (c *capLog) warn(now time.Time, msg string, args ...any) { c.write(now, msg, args...) }

// flush reports the lines suppressed since the last line written.
func (c *capLog) flush() {
	c.mu.Lock()
	n := c.suppressed
	c.suppressed = 0
	c.mu.Unlock()
	if n > 0 {
		c.log.Log(context.Background(), c.level, "log lines suppressed by the rate cap", "suppressed", n)
	}
}

// denied logs one denied (or shadow-allowed) check.
func (c *capLog) denied(policy, key string, hits int64, d bucket.Decision, now time.Time) {
	c.write(now, "rate limit exceeded",
		"policy", policy, "key", key, "hits", hits, "limit", d.Limit,
		"retry_after_ms", d.RetryAfter.Milliseconds(), "shadow", d.Shadowed)
}
