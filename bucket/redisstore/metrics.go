package redisstore

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// The reasons a check fails, as counted in ratelimit_redis_errors_total.
const (
	reasonTimeout     = "timeout"      // no answer within Options.Timeout
	reasonUnavailable = "unavailable"  // connection refused, reset or closed
	reasonReply       = "reply"        // Redis answered with an error
	reasonBreakerOpen = "breaker_open" // refused at once by the open breaker
)

var reasons = [...]string{reasonTimeout, reasonUnavailable, reasonReply, reasonBreakerOpen}

// metrics are the Store's Prometheus collectors. With no registerer they
// still count, unregistered, so the check path has no nil tests.
type metrics struct {
	reg         prometheus.Registerer
	errors      *prometheus.CounterVec
	byReason    map[string]prometheus.Counter
	breakerOpen prometheus.Gauge
	scriptLoads prometheus.Counter
	cols        []prometheus.Collector
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ratelimit", Subsystem: "redis", Name: "errors_total",
			Help: "Checks that failed in the Redis store, by reason: timeout, unavailable, reply (an error reply) or breaker_open (refused at once while Redis is down).",
		}, []string{"reason"}),
		breakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ratelimit", Subsystem: "redis", Name: "breaker_open",
			Help: "1 while the Redis store's circuit breaker refuses checks, else 0.",
		}),
		scriptLoads: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ratelimit", Subsystem: "redis", Name: "script_loads_total",
			Help: "Times the check script was sent again after Redis answered NOSCRIPT (a flushed script cache, a failover).",
		}),
		byReason: make(map[string]prometheus.Counter, len(reasons)),
	}
	for _, r := range reasons {
		m.byReason[r] = m.errors.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.errors, m.breakerOpen, m.scriptLoads} {
		if err := reg.Register(c); err != nil {
			m.unregister()
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("%w: metrics: %v (one Store per registerer)", ErrConfig, err)
			}
			return nil, fmt.Errorf("%w: metrics: %v", ErrConfig, err)
		}
		m.cols = append(m.cols, c)
	}
	return m, nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.cols {
		m.reg.Unregister(c)
	}
	m.cols = nil
}
