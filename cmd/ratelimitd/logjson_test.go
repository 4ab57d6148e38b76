package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// jsonLines parses every line of log as a JSON object and fails the test
// for a line that is not one.
func jsonLines(t *testing.T, name, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimRight(log, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("%s: a line that is not JSON: %q", name, line)
			continue
		}
		if m["msg"] == nil || m["level"] == nil || m["time"] == nil {
			t.Errorf("%s: a line without msg, level or time: %q", name, line)
		}
		out = append(out, m)
	}
	return out
}

// TestJSONLogEveryLine: with --log-format json, every line a node writes is
// JSON, the lines of raft, memberlist and the Redis client included, each
// at its own level: two nodes start a cluster (the first election, the
// join, at debug level), a policy changes, and both shut down; a node with
// the Redis store loses its Redis. The last node's shutdown, alone, warns
// of nothing.
func TestJSONLogEveryLine(t *testing.T) {
	args := []string{"--log-format", "json", "--log-level", "debug"}
	a := startNode(t, "json-a", nil, args...)
	b := startNode(t, "json-b", nil, append(args, "--join", a.Gossip)...)
	waitMembers(t, 30*time.Second, a, b)
	body := []byte(`{"name":"auth","algorithm":"sliding_window","limit":3,"window_ms":900000}`)
	resp, err := adminDo("PUT", b.URL+"/v1/policies/auth", body)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT /v1/policies/auth: %d %s", resp.StatusCode, msg)
	}
	b.stop()
	a.stop()

	redisURL, killRedis := startRedisProc(t)
	r := startServe(t, append([]string{"--standalone", "--store", "redis"}, args...), map[string]string{"REDIS_URL": redisURL})
	killRedis()
	for range 3 {
		check(r.URL, "auth", "k", 1)
	}
	r.stop()

	components := map[string]bool{}
	for _, n := range []struct {
		name string
		log  string
	}{{"json-a", a.log.String()}, {"json-b", b.log.String()}, {"redis node", r.log.String()}} {
		lines := jsonLines(t, n.name, n.log)
		shuttingDown := false
		for _, m := range lines {
			if c, ok := m["component"].(string); ok {
				components[c] = true
			}
			if m["msg"] == "shutting down" {
				shuttingDown = true
			}
			if n.name == "json-a" && shuttingDown && (m["level"] == "WARN" || m["level"] == "ERROR") {
				t.Errorf("the lone node's shutdown: %v", m)
			}
			if strings.HasPrefix(m["msg"].(string), "[") || strings.Contains(m["msg"].(string), " [WARN] ") {
				t.Errorf("%s: a level left in the message: %v", n.name, m)
			}
		}
	}
	for _, c := range []string{"raft", "memberlist"} {
		if !components[c] {
			t.Errorf("no line of %s at debug level", c)
		}
	}
}
