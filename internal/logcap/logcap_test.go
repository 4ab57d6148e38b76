package logcap_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/internal/logcap"
)

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out = append(out, m)
	}
	buf.Reset()
	return out
}

// TestCap: a burst of Lines is written, the rest is counted, the count
// rides on the next line written, the cap refills over Per, and Flush
// reports what no line carried.
func TestCap(t *testing.T) {
	var buf bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	l := logcap.New(slog.New(slog.NewJSONHandler(&buf, nil)), logcap.Config{Level: slog.LevelWarn, Lines: 3, Per: time.Second, Now: c.Now})
	for range 100 {
		l.Log("event", "k", 1)
	}
	got := lines(t, &buf)
	if len(got) != 3 || got[0]["level"] != "WARN" || got[0]["suppressed"] != nil {
		t.Fatalf("a burst of 100: %v, want 3 warnings without a count", got)
	}
	c.add(time.Second / 3) // one line's worth
	l.Log("event")
	l.Log("event")
	got = lines(t, &buf)
	if len(got) != 1 || got[0]["suppressed"] != float64(97) {
		t.Fatalf("a third of a second later: %v, want one line with suppressed 97", got)
	}
	l.Flush()
	if got = lines(t, &buf); len(got) != 1 || got[0]["suppressed"] != float64(1) {
		t.Fatalf("flush: %v, want the one line suppressed since", got)
	}
	l.Flush()
	if got = lines(t, &buf); len(got) != 0 {
		t.Fatalf("a second flush wrote %v", got)
	}
	c.add(time.Hour) // the cap refills to Lines, no more
	for range 10 {
		l.Log("event")
	}
	if got = lines(t, &buf); len(got) != 3 {
		t.Fatalf("after an hour: %d lines, want 3", len(got))
	}
	var nilLogger *logcap.Logger
	nilLogger.Log("x")
	nilLogger.Flush()
}

// TestConcurrent: under concurrent use, written plus suppressed is every
// line.
func TestConcurrent(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	h := slog.NewJSONHandler(writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(b) }), nil)
	c := &clock{t: time.Unix(1000, 0)}
	l := logcap.New(slog.New(h), logcap.Config{Lines: 5, Now: c.Now})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 250 {
				l.Log("event")
			}
		})
	}
	wg.Wait()
	l.Flush()
	total := 0 // each event line stands for itself; each count for the lines it suppressed
	for _, m := range lines(t, &buf) {
		if m["msg"] == "event" {
			total++
		}
		if n, ok := m["suppressed"].(float64); ok {
			total += int(n)
		}
	}
	if total != 1000 {
		t.Fatalf("%d lines written or counted, want 1000", total)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
