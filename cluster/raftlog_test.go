package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// Raft's lines keep their level, but the routine warnings of a healthy
// node (its first election, a one-node shutdown) are logged at info.
func TestSlogWriterLevels(t *testing.T) {
	for line, want := range map[string]string{
		"2026-11-26T10:00:00Z [ERROR] raft: failed to append: disk full":                                "ERROR",
		"2026-11-26T10:00:00Z [WARN]  raft: failed to contact: server-id=n2 time=1s":                    "WARN",
		"2026-11-26T10:00:00Z [WARN]  raft: heartbeat timeout reached, starting election: last-leader=": "INFO",
		`2026-11-26T10:00:00Z [WARN]  raft: leadership transfer failed: err="cannot find peer"`:         "INFO",
		"2026-11-26T10:00:00Z [INFO]  raft: entering leader state: leader=n1":                           "INFO",
	} {
		var buf bytes.Buffer
		w := slogWriter{slog.New(slog.NewTextHandler(&buf, nil))}
		if _, err := w.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), "level="+want) {
			t.Errorf("%q logged as %s, want level %s", line, strings.TrimSpace(buf.String()), want)
		}
	}
}
