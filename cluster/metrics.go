package cluster

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/bucket"
)

// metrics are the node's Prometheus collectors. With no registerer they
// still count, unexported, so the check path has no nil tests.
type metrics struct {
	reg       prometheus.Registerer
	decisions *prometheus.CounterVec
	errors    prometheus.Counter
	cols      []prometheus.Collector
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
			Namespace: "ratelimit", Name: "check_errors_total",
			Help: "Checks that failed with a store error.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.decisions, m.errors} {
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
