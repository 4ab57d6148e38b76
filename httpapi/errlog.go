package httpapi

import (
	"log/slog"
	"time"

	"github.com/vibewell/ratelimit/internal/logcap"
)

// newErrorLog returns the log of failed checks and admin calls: errors, at
// most one line a second with a count of the rest, so that a failing
// backend under load cannot flood the log.
func newErrorLog(l *slog.Logger) *logcap.Logger {
	return logcap.New(l, logcap.Config{Level: slog.LevelError, Lines: 1, Per: time.Second})
}
