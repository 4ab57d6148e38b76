package cluster

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Whatever a peer sends is checked here before it changes anything, even
// when the peer is authenticated: a policy command before it enters the
// raft log and again before the state machine applies it, and each counter
// of a hand-off or a copy before it is merged. What fails is dropped,
// counted and logged at a capped rate.

// inboundMetrics count what was refused.
type inboundMetrics struct {
	commands *prometheus.CounterVec // by reason
	states   *prometheus.CounterVec // by message kind and reason
}

func newInboundMetrics() inboundMetrics {
	return inboundMetrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "policy_commands_refused_total",
			Help: "Policy commands refused before entering the raft log or before being applied, by reason (malformed, invalid, refused: does not apply to the table).",
		}, []string{"reason"}),
		states: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "peer_states_dropped_total",
			Help: "Counters of hand-offs and copies dropped instead of merged, by message (handoff, replica) and reason (malformed, sender: not a ring member, key: not owned or succeeded here, policy: unknown, state: impossible for its policy).",
		}, []string{"message", "reason"}),
	}
}

func (m inboundMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.commands, m.states}
}

// checkProposal validates c and encodes it as a log entry.
func (n *Node) checkProposal(c command) ([]byte, error) {
	if err := c.validate(n.cfg.MaxKeyLen); err != nil {
		return nil, err
	}
	data, err := encodeCommand(c)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxCommandBytes {
		return nil, ErrCommandTooLarge
	}
	return data, nil
}

// ErrCommandTooLarge: a policy change encodes to more than
// MaxCommandBytes. It wraps bucket.ErrInvalidPolicy.
var ErrCommandTooLarge = fmt.Errorf("cluster: policy command larger than %d bytes: %w", MaxCommandBytes, errInvalidPolicy)

// decodeEntry decodes and validates a log entry.
func (n *Node) decodeEntry(data []byte) (command, error) {
	c, err := decodeCommand(data)
	if err != nil {
		return c, err
	}
	return c, c.validate(n.cfg.MaxKeyLen)
}

// checkEntry refuses, on the leader, a log entry that is malformed,
// invalid, or would be refused by the table as it is (a built-in policy
// deleted without force, an unknown policy), so that it is never
// committed.
func (n *Node) checkEntry(data []byte) error {
	c, err := n.decodeEntry(data)
	if err == nil {
		n.stateMu.Lock()
		_, err = n.state.apply(c)
		n.stateMu.Unlock()
	}
	if err != nil {
		n.refuseCommand("proposed", 0, err)
	}
	return err
}

// refuseCommand counts and logs a refused command.
func (n *Node) refuseCommand(stage string, index uint64, err error) {
	reason := "refused"
	switch {
	case errors.Is(err, errMalformedCommand):
		reason = "malformed"
	case errors.Is(err, errInvalidPolicy):
		reason = "invalid"
	}
	n.metrics.inbound.commands.WithLabelValues(reason).Inc()
	n.warnings.warn(time.Now(), "policy command refused; the table is unchanged", "stage", stage, "index", index, "reason", reason, "err", capText(err.Error()))
}

// capText shortens s, which may come from a peer, for a log line.
func capText(s string) string {
	const most = 256
	if len(s) <= most {
		return s
	}
	return s[:most] + "…"
}
