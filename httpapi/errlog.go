package httpapi

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// errorLog logs at most one line a second, and counts the lines it drops,
// so that a failing backend under load cannot flood the log.
type errorLog struct {
	logger     *slog.Logger
	next       atomic.Int64 // Unix nanoseconds before which lines are dropped
	suppressed atomic.Int64
}

func newErrorLog(l *slog.Logger) *errorLog { return &errorLog{logger: l} }

func (l *errorLog) log(msg string, args ...any) {
	now := time.Now().UnixNano()
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+int64(time.Second)) {
		l.suppressed.Add(1)
		return
	}
	if n := l.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	l.logger.Error(msg, args...)
}
