package logadapt_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/vibewell/ratelimit/internal/logadapt"
)

func records(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		out = append(out, m)
	}
	buf.Reset()
	return out
}

// TestHclog: each hclog level reaches slog at its own level with its
// fields as attributes; lines under the minimum are dropped; routine
// warnings come at info.
func TestHclog(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := logadapt.NewHclog(l, hclog.Debug, "heartbeat timeout reached, starting election")
	h.Trace("dropped")
	h.Debug("d", "k", 1)
	h.Info("i")
	h.With("peer", "n2").Warn("failed to contact", "time", "1s")
	h.Warn("heartbeat timeout reached, starting election", "last-leader-id", "")
	h.Named("snap").Error("e", "error", "boom")
	got := records(t, &buf)
	want := []struct{ level, msg string }{{"DEBUG", "d"}, {"INFO", "i"}, {"WARN", "failed to contact"},
		{"INFO", "heartbeat timeout reached, starting election"}, {"ERROR", "e"}}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i]["level"] != w.level || got[i]["msg"] != w.msg {
			t.Errorf("line %d: %v, want %s %q", i, got[i], w.level, w.msg)
		}
	}
	if got[0]["k"] != float64(1) || got[2]["peer"] != "n2" || got[2]["time"] != "1s" || got[4]["error"] != "boom" {
		t.Errorf("fields lost: %v", got)
	}
	if !h.IsDebug() || h.IsTrace() {
		t.Errorf("IsDebug %v IsTrace %v at minimum debug", h.IsDebug(), h.IsTrace())
	}
	h.SetLevel(hclog.Warn)
	h.Info("dropped")
	if n := len(records(t, &buf)); n != 0 || h.GetLevel() != hclog.Warn {
		t.Errorf("after SetLevel(Warn): %d lines at info, level %v", n, h.GetLevel())
	}
}

// TestStdLogger: memberlist's level prefixes become slog levels.
func TestStdLogger(t *testing.T) {
	var buf bytes.Buffer
	l := logadapt.StdLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Printf("[ERR] memberlist: Failed to send ping: %s", "x")
	l.Printf("[WARN] memberlist: Refuting a suspect message")
	l.Printf("[DEBUG] memberlist: Stream connection")
	l.Printf("[INFO] memberlist: Marking n2 as failed")
	l.Printf("no prefix")
	got := records(t, &buf)
	want := []struct{ level, msg string }{{"ERROR", "memberlist: Failed to send ping: x"}, {"WARN", "memberlist: Refuting a suspect message"},
		{"DEBUG", "memberlist: Stream connection"}, {"INFO", "memberlist: Marking n2 as failed"}, {"INFO", "no prefix"}}
	if len(got) != len(want) {
		t.Fatalf("%d lines: %v", len(got), got)
	}
	for i, w := range want {
		if got[i]["level"] != w.level || got[i]["msg"] != w.msg {
			t.Errorf("line %d: %v, want %s %q", i, got[i], w.level, w.msg)
		}
	}
}
