package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster/ring"
	"github.com/vibewell/ratelimit/internal/msgpackfit"
	"github.com/vibewell/ratelimit/transport"
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
	n.warnings.Log("policy command refused; the table is unchanged", "stage", stage, "index", index, "reason", reason, "err", capText(err.Error()))
}

// capText shortens s, which may come from a peer, for a log line.
func capText(s string) string {
	const most = 256
	if len(s) <= most {
		return s
	}
	return s[:most] + "…"
}

// MaxClockSkew is the clock difference between nodes that a counter's
// time may show: a hand-off or copy whose state lies further in the
// future is dropped. Within it, a forged time can forgive at most the
// hits that would have expired within MaxClockSkew anyway.
const MaxClockSkew = time.Second

// receiveStates decodes the counters of a hand-off or a copy (method)
// and merges each that passes the checks with merge; it returns how
// many it merged. A counter is merged only if the sender is a current
// ring member other than this node, its policy is known, bucket.Sanitize
// finds its state possible, and its key is one this node takes from the
// sender: for a hand-off, a key this node owns, or one the sender owns in
// this node's ring (behind the sender's: the sender has given it away);
// for a copy, a key the sender owns and this node would own without it.
// The rest are dropped, counted and logged. The hand-off's counters
// dropped for their key alone are refused: their positions in the
// message are returned, so that the sender keeps them (this node's ring
// names a third member as the owner; one of the two rings is behind, and
// the sender's next ring sends them on).
func (n *Node) receiveStates(ctx context.Context, method string, body []byte, merge func(bucket.Key, bucket.Policy, bucket.State, time.Time)) (merged int, refused []uint32, err error) {
	var msg handoffMsg
	err = errLengthBeyondEnd
	if msgpackfit.Fits(body) {
		err = msg.decode(body)
	}
	if err != nil {
		n.dropStates(method, "malformed", "", 1, err)
		return 0, nil, fmt.Errorf("cluster: %s: %w", method, err)
	}
	rt := n.route.Load()
	from := n.senderName(ctx, rt, &msg)
	if rt == nil || from == "" || from == rt.self || !rt.ring.Has(from) {
		n.dropStates(method, "sender", from, len(msg.Items), errors.New("not a member of this node's ring"))
		return 0, nil, fmt.Errorf("cluster: %s from %q: %w", method, capText(from), errNotMember)
	}
	table := *n.policies.Load()
	now := n.clock.Now()
	var without *ring.Ring // the ring without the sender, built on demand
	var dropped [3]int     // key, policy, state
	var lastErr error
	for i := range msg.Items {
		it := &msg.Items[i]
		k := bucket.Key{Policy: it.Policy, ID: it.Key}
		p := table[it.Policy]
		if p == nil {
			dropped[1]++
			continue
		}
		if len(it.Key) == 0 || len(it.Key) > n.cfg.MaxKeyLen {
			dropped[0]++
			continue
		}
		var buf [128]byte
		enc, _ := k.AppendBinary(buf[:0])
		owner := rt.ring.Owner(enc)
		mine := owner == rt.self || owner == from
		if method == methodReplica {
			// This node must be the key's successor with respect to the
			// sender, and not its owner: a copy of a key owned here would
			// be folded into its counter.
			if without == nil {
				without = n.ringWithout(rt, from)
			}
			mine = owner == from && without.Owner(enc) == rt.self
		}
		if !mine {
			dropped[0]++
			if method == methodHandoff && len(refused) < maxRefused {
				refused = append(refused, uint32(i))
			}
			continue
		}
		q := p.Policy
		q.Limit = p.LimitFor(it.Key)
		st, err := bucket.Sanitize(q, it.state(), now, MaxClockSkew)
		if err != nil {
			dropped[2]++
			lastErr = err
			continue
		}
		merge(k, p.Policy, st, now)
		merged++
	}
	if dropped[0] > 0 {
		n.dropStates(method, "key", from, dropped[0], errors.New("keys this node does not take from the sender (a hand-off's stay with it), or of a bad length"))
	}
	if dropped[1] > 0 {
		n.dropStates(method, "policy", from, dropped[1], ErrUnknownPolicy)
	}
	if dropped[2] > 0 {
		n.dropStates(method, "state", from, dropped[2], lastErr)
	}
	return merged, refused, nil
}

// maxRefused bounds the positions a hand-off's answer names: at most a
// chunk's.
const maxRefused = handoffChunk

// errLengthBeyondEnd: a msgpack length runs past the end of its message.
var errLengthBeyondEnd = errors.New("malformed msgpack: a length beyond the end of the message")

// errNotMember answers a hand-off or copy from a node outside the ring.
var errNotMember = errors.New("cluster: sender is not a ring member")

// senderName is the name of the node that sent msg. On a connection
// authenticated by a certificate derived from the cluster key, the name
// the certificate gives, whatever the message says. With the operator's
// own PKI the certificate names a host, not necessarily a node: then its
// name if it is a ring member, else the message's (every holder of such
// a certificate is trusted alike). On a plain connection (an insecure
// cluster), the message's.
func (n *Node) senderName(ctx context.Context, rt *routeTable, msg *handoffMsg) string {
	name, ok := transport.PeerName(ctx)
	switch {
	case !ok:
		return msg.From
	case n.cfg.PeerTLS == nil && n.cfg.Transport == nil:
		return name
	case rt != nil && rt.ring.Has(name):
		return name
	}
	return msg.From
}

// dropStates counts and logs count counters of a method's message from
// the node from, dropped for reason.
func (n *Node) dropStates(method, reason, from string, count int, err error) {
	n.metrics.inbound.states.WithLabelValues(method, reason).Add(float64(count))
	n.warnings.Log("counters from a peer dropped instead of merged", "message", method, "reason", reason,
		"from", capText(from), "counters", count, "err", capText(err.Error()))
}

// ringWithout returns the ring of rt's members without name: the owners
// their keys would have if it failed. It is built once per route table
// and name.
func (n *Node) ringWithout(rt *routeTable, name string) *ring.Ring {
	if name == rt.self && rt.succ != nil {
		return rt.succ
	}
	c := n.without.Load()
	if c == nil || c.rt != rt {
		c = &ringsWithout{rt: rt, rings: map[string]*ring.Ring{}}
		n.without.Store(c) // a concurrent caller may build a ring twice: harmless
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rings[name]
	if r == nil {
		members := slices.DeleteFunc(rt.ring.Members(), func(m string) bool { return m == name })
		r = ring.New(members, n.cfg.Ring)
		c.rings[name] = r
	}
	return r
}

// ringsWithout caches ringWithout's rings for one route table.
type ringsWithout struct {
	rt    *routeTable
	mu    sync.Mutex
	rings map[string]*ring.Ring
}
