// Package logcap writes log lines at a capped rate, so that a flood of
// events (an attack, a backend down under load) cannot flood the log.
// Lines over the cap are counted, and the next line written carries the
// count as "suppressed". It is the one rate limiter of the project's logs.
package logcap

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Logger writes at most Lines lines per Per at one level. It is safe for
// concurrent use. A nil *Logger writes nothing.
type Logger struct {
	log      *slog.Logger
	level    slog.Level
	per      time.Duration
	interval time.Duration // per / lines: what one line uses of the cap
	now      func() time.Time

	mu         sync.Mutex
	tat        time.Time // GCRA's theoretical arrival time
	suppressed int64
}

// Config says how many lines a Logger writes.
type Config struct {
	// Level of every line.
	Level slog.Level
	// Lines may be written per Per, in a burst or spread out. Default: 1.
	Lines int
	// Per is the period of Lines. Default: 1s.
	Per time.Duration
	// Now tells the time. Default: time.Now.
	Now func() time.Time
}

// New returns a Logger that writes to log within cfg's cap.
func New(log *slog.Logger, cfg Config) *Logger {
	if cfg.Lines <= 0 {
		cfg.Lines = 1
	}
	if cfg.Per <= 0 {
		cfg.Per = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Logger{log: log, level: cfg.Level, per: cfg.Per, interval: cfg.Per / time.Duration(cfg.Lines), now: cfg.Now}
}

// allow takes one line from the cap and returns how many lines were
// suppressed before it, or ok false.
func (l *Logger) allow() (ok bool, suppressed int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	tat := l.tat
	if tat.Before(now) {
		tat = now
	}
	if tat = tat.Add(l.interval); tat.Sub(now) > l.per {
		l.suppressed++
		return false, 0
	}
	l.tat = tat
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// Log writes msg with args unless the cap is reached; then it counts it.
func (l *Logger) Log(msg string, args ...any) {
	if l == nil {
		return
	}
	ok, suppressed := l.allow()
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), l.level, msg, args...)
}

// Flush writes how many lines were suppressed since the last line
// written, if any: a node calls it on a timer and on its way out, so that
// no count is lost.
func (l *Logger) Flush() {
	if l == nil {
		return
	}
	l.mu.Lock()
	n := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	if n > 0 {
		l.log.Log(context.Background(), l.level, "log lines suppressed by the rate cap", "suppressed", n)
	}
}
