// Package logadapt routes the logs of the libraries a node runs to its
// slog.Logger, each line at its own level: raft's hclog.Logger through an
// adapter (no text is parsed), and memberlist's standard *log.Logger, whose
// lines start with their level ("[ERR] ", "[WARN] "...).
package logadapt

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// Hclog is an hclog.Logger that writes to a slog.Logger.
type Hclog struct {
	log     *slog.Logger
	name    string
	implied []any
	min     *atomic.Int32 // hclog.Level: lines below it are dropped
	routine map[string]bool
}

var _ hclog.Logger = (*Hclog)(nil)

// NewHclog returns an hclog.Logger that writes the lines at min or above
// to l. Warnings whose message is one of routine are written at info:
// events every healthy node has (raft's first election), which an operator
// should not be asked to look at.
func NewHclog(l *slog.Logger, min hclog.Level, routine ...string) *Hclog {
	h := &Hclog{log: l, min: new(atomic.Int32), routine: map[string]bool{}}
	h.min.Store(int32(min))
	for _, r := range routine {
		h.routine[r] = true
	}
	return h
}

// Level maps an hclog level to slog's.
func Level(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Log implements hclog.Logger.
func (h *Hclog) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off || level < hclog.Level(h.min.Load()) {
		return
	}
	sl := Level(level)
	if sl == slog.LevelWarn && h.routine[msg] {
		sl = slog.LevelInfo
	}
	if !h.log.Enabled(context.Background(), sl) {
		return
	}
	if len(h.implied) > 0 {
		args = append(append([]any(nil), h.implied...), args...)
	}
	h.log.Log(context.Background(), sl, msg, args...)
}

func (h *Hclog) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *Hclog) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *Hclog) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *Hclog) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *Hclog) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *Hclog) enabled(l hclog.Level) bool {
	return l >= hclog.Level(h.min.Load()) && h.log.Enabled(context.Background(), Level(l))
}

func (h *Hclog) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *Hclog) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *Hclog) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *Hclog) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *Hclog) IsError() bool { return h.enabled(hclog.Error) }

// ImpliedArgs implements hclog.Logger.
func (h *Hclog) ImpliedArgs() []any { return h.implied }

// With implements hclog.Logger.
func (h *Hclog) With(args ...any) hclog.Logger {
	c := *h
	c.implied = append(append([]any(nil), h.implied...), args...)
	return &c
}

// Name implements hclog.Logger.
func (h *Hclog) Name() string { return h.name }

// Named implements hclog.Logger: the name is appended to the current one.
func (h *Hclog) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

// ResetNamed implements hclog.Logger.
func (h *Hclog) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

// SetLevel implements hclog.Logger; it applies to the loggers derived
// from this one too.
func (h *Hclog) SetLevel(level hclog.Level) { h.min.Store(int32(level)) }

// GetLevel implements hclog.Logger.
func (h *Hclog) GetLevel() hclog.Level { return hclog.Level(h.min.Load()) }

// StandardLogger implements hclog.Logger: a *log.Logger whose lines are
// written at the level their prefix names.
func (h *Hclog) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return StdLogger(h.log)
}

// StandardWriter implements hclog.Logger.
func (h *Hclog) StandardWriter(*hclog.StandardLoggerOptions) io.Writer { return lineWriter{h.log} }

// StdLogger returns a *log.Logger (memberlist's kind) that writes each
// line to l at the level of its prefix: "[TRACE] " and "[DEBUG] " at debug,
// "[INFO] " and none at info, "[WARN] " at warn, "[ERR] " and "[ERROR] "
// at error. The prefix is dropped from the message.
func StdLogger(l *slog.Logger) *log.Logger { return log.New(lineWriter{l}, "", 0) }

type lineWriter struct{ log *slog.Logger }

var prefixes = []struct {
	p     string
	level slog.Level
}{
	{"[ERR] ", slog.LevelError}, {"[ERROR] ", slog.LevelError}, {"[WARN] ", slog.LevelWarn},
	{"[INFO] ", slog.LevelInfo}, {"[DEBUG] ", slog.LevelDebug}, {"[TRACE] ", slog.LevelDebug - 4},
}

func (w lineWriter) Write(b []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(b, "\n"), []byte{'\n'}) {
		msg, level := string(line), slog.LevelInfo
		for _, p := range prefixes {
			if rest, ok := strings.CutPrefix(msg, p.p); ok {
				msg, level = strings.TrimSpace(rest), p.level
				break
			}
		}
		w.log.Log(context.Background(), level, msg)
	}
	return len(b), nil
}
