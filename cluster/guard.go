package cluster

import (
	"bytes"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/internal/logadapt"
	"github.com/vibewell/ratelimit/internal/logcap"
	"github.com/vibewell/ratelimit/transport"
)

// guard counts and logs what the node's cluster ports refuse: gossip from
// a node without the cluster key, peer and raft connections that fail the
// TLS handshake or exceed a limit. It is the Prometheus collector of
// ratelimit_cluster_refused_total{port, reason}; its log lines are capped
// at one a second.
type guard struct {
	desc *prometheus.Desc
	log  *logcap.Logger

	mu     sync.Mutex
	counts map[[2]string]uint64 // (port, reason) → refusals
	stats  func() transport.Stats
}

func newGuard(log *slog.Logger) *guard {
	return &guard{
		desc: prometheus.NewDesc("ratelimit_cluster_refused_total",
			"Messages and connections refused by the cluster ports, by port (gossip, peer, raft) and reason: auth (no or wrong cluster key or certificate), handshake, conn_limit, read_timeout, idle, bad_frame, calls_throttled (a call waited for the per-connection cap), ring_config (a member with another ring config).",
			[]string{"port", "reason"}, nil),
		log:    logcap.New(log, logcap.Config{Level: slog.LevelWarn}),
		counts: map[[2]string]uint64{},
	}
}

// refuse counts and logs one refusal; an idle connection closed is
// counted only, since peers leave idle connections in their pools.
func (g *guard) refuse(port, reason, remote string, err error) {
	g.mu.Lock()
	g.counts[[2]string{port, reason}]++
	g.mu.Unlock()
	if reason == "idle" {
		return
	}
	args := []any{"port", port, "reason", reason, "remote", remote}
	if err != nil {
		args = append(args, "err", err.Error())
	}
	g.log.Log("cluster port refused a peer", args...)
}

// count returns the refusals of (port, reason), the peer transport's
// included.
func (g *guard) count(port, reason string) uint64 {
	var out uint64
	for _, m := range g.snapshot() {
		if m.port == port && m.reason == reason {
			out += m.n
		}
	}
	return out
}

type refusal struct {
	port, reason string
	n            uint64
}

func (g *guard) snapshot() []refusal {
	g.mu.Lock()
	out := make([]refusal, 0, len(g.counts)+6)
	for k, n := range g.counts {
		out = append(out, refusal{k[0], k[1], n})
	}
	stats := g.stats
	g.mu.Unlock()
	if stats != nil {
		st := stats()
		out = append(out,
			refusal{"peer", "handshake", st.HandshakeErrors},
			refusal{"peer", "conn_limit", st.ConnsRefused},
			refusal{"peer", "read_timeout", st.ReadTimeouts},
			refusal{"peer", "idle", st.IdleClosed},
			refusal{"peer", "bad_frame", st.BadFrames},
			refusal{"peer", "calls_throttled", st.CallsThrottled},
		)
	}
	return out
}

// watch makes the guard report the refusals of a TCP peer transport.
func (g *guard) watch(tr transport.Transport) {
	if t, ok := tr.(interface{ Stats() transport.Stats }); ok {
		g.mu.Lock()
		g.stats = t.Stats
		g.mu.Unlock()
	}
}

// Describe implements prometheus.Collector.
func (g *guard) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

// Collect implements prometheus.Collector.
func (g *guard) Collect(ch chan<- prometheus.Metric) {
	for _, r := range g.snapshot() {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.CounterValue, float64(r.n), r.port, r.reason)
	}
}

// refusedRaft is raft's stream layer's refusal hook.
func (n *Node) refusedRaft(reason, remote string, err error) {
	if reason == "handshake" {
		reason = "auth"
	}
	n.guard.refuse("raft", reason, remote, err)
}

// gossipLogger is memberlist's logger: lines about messages that could not
// be decrypted (a node without the cluster key, or with another) are
// refusals, counted and logged as warnings under the cap; the rest go to
// the node's log at the level of their prefix.
func (n *Node) gossipLogger() *log.Logger {
	next := logadapt.StdLogger(n.log.With("component", "memberlist")).Writer()
	return log.New(gossipLogWriter{n: n, next: next}, "", 0)
}

type gossipLogWriter struct {
	n    *Node
	next io.Writer
}

func (w gossipLogWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	if strings.Contains(line, ErrRingConfig.Error()) {
		return len(p), nil // counted and logged by checkRing, under the cap
	}
	if strings.Contains(line, "ecrypt") || strings.Contains(line, "not encrypted") {
		remote := ""
		if i := strings.LastIndex(line, "from="); i >= 0 {
			remote = line[i+len("from="):]
		}
		w.n.guard.refuse("gossip", "auth", remote, nil)
		return len(p), nil
	}
	return w.next.Write(p)
}
