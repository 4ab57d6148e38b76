package cluster

import (
	"log/slog"
	"time"

	"github.com/vibewell/ratelimit/internal/logcap"
)

// newEventLogs returns the node's two capped logs: denied checks (info,
// DenialLogRate lines a second) and failures that recur under load
// (warnings, one line a second). Both tell time by the node's clock.
func (n *Node) newEventLogs() (denials, warnings *logcap.Logger) {
	now := n.clock.Now
	denials = logcap.New(n.log, logcap.Config{Level: slog.LevelInfo, Lines: n.cfg.DenialLogRate, Per: time.Second, Now: now})
	warnings = logcap.New(n.log, logcap.Config{Level: slog.LevelWarn, Lines: 1, Per: time.Second, Now: now})
	return denials, warnings
}

// logDenied logs one denied (or shadow-allowed) check.
func (n *Node) logDenied(policy, key string, hits int64, d Decision) {
	n.denials.Log("rate limit exceeded",
		"policy", policy, "key", key, "hits", hits, "limit", d.Limit,
		"retry_after_ms", d.RetryAfter.Milliseconds(), "shadow", d.Shadowed)
}
