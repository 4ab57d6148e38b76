package cluster

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/bucket"
)

// metrics are the node's Prometheus collectors. With no registerer they
// still count, unexported, so the check path has no nil tests.
type metrics struct {
	reg             prometheus.Registerer
	decisions       *prometheus.CounterVec
	errors          prometheus.Counter
	fallbacks       *prometheus.CounterVec
	members         prometheus.Gauge
	handedOff       prometheus.Counter
	receivedHandoff prometheus.Counter
	replicaSent     prometheus.Counter
	replicaErrors   prometheus.Counter
	replicaReceived prometheus.Counter
	replicaPromoted prometheus.Counter
	handoverLate    prometheus.Counter
	inbound         inboundMetrics
	cols            []prometheus.Collector
}

// decisionCounters are one policy's counters, resolved once per policy
// table so a check increments without a label lookup.
type decisionCounters struct {
	allowed, denied, shadowed prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "decisions_total",
			Help: "Checks decided, by policy and result (allowed, denied, or shadowed: over the limit but allowed by shadow mode).",
		}, []string{"policy", "result"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "store_errors_total",
			Help: "Checks whose store failed (the failure mode then decided).",
		}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "fallbacks_total",
			Help: "Checks decided without their owner, by policy and by who decided: the key's successor (mode \"successor\"), or the policy's failure mode (open, closed, local) when the counter could not be reached.",
		}, []string{"policy", "mode"}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ratelimit", Name: "cluster_members",
			Help: "Members in this node's ownership ring.",
		}),
		handedOff: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "handoff_sent_total",
			Help: "Counters handed off to their new owner after a ring change.",
		}),
		receivedHandoff: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "handoff_received_total",
			Help: "Counters received from their previous owner and merged.",
		}),
		replicaSent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "replica_sent_total",
			Help: "Counter copies sent to the node that would own their key if this one failed.",
		}),
		replicaErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "replica_send_errors_total",
			Help: "Counter copies that could not be sent to their successor.",
		}),
		replicaReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "replica_received_total",
			Help: "Counter copies received from the owner of their key.",
		}),
		replicaPromoted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "replica_promoted_total",
			Help: "Counter copies folded into this node's counters when it took over their keys from a failed node.",
		}),
		handoverLate: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ratelimit", Name: "handover_late_total",
			Help: "Checks that waited the longest a hand-over may take (a new owner waiting for the old one's counters, or the old one for its calls) and were then decided as the ring says.",
		}),
		inbound: newInboundMetrics(),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range append([]prometheus.Collector{m.decisions, m.errors, m.fallbacks, m.members, m.handedOff, m.receivedHandoff, m.replicaSent, m.replicaErrors, m.replicaReceived, m.replicaPromoted, m.handoverLate}, m.inbound.collectors()...) {
		if err := reg.Register(c); err != nil {
			m.unregister()
			return nil, err
		}
		m.cols = append(m.cols, c)
	}
	return m, nil
}

func (m *metrics) forPolicy(name string) *decisionCounters {
	if m == nil {
		return &decisionCounters{}
	}
	return &decisionCounters{
		allowed:  m.decisions.WithLabelValues(name, "allowed"),
		denied:   m.decisions.WithLabelValues(name, "denied"),
		shadowed: m.decisions.WithLabelValues(name, "shadowed"),
	}
}

// fallback counts a check decided without its owner: by the key's
// successor ("successor") or by the policy's failure mode.
func (m *metrics) fallback(policy, mode string) {
	m.fallbacks.WithLabelValues(policy, mode).Inc()
}

func (c *decisionCounters) record(d bucket.Decision) {
	if c.allowed == nil {
		return
	}
	switch {
	case d.Shadowed:
		c.shadowed.Inc()
	case d.Allowed:
		c.allowed.Inc()
	default:
		c.denied.Inc()
	}
}

// unregister removes the node's collectors, so a node can be started again
// on the same registry.
func (m *metrics) unregister() {
	if m == nil || m.reg == nil {
		return
	}
	for _, c := range m.cols {
		m.reg.Unregister(c)
	}
	m.cols = nil
}
