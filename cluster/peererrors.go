package cluster

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/transport"
)

// peerErrors counts the requests this node sent to a peer that failed in
// the transport, by operation ("check" for forwarded checks and batches of
// them, else the call's method) and kind of failure. It is counted where
// the request starts, on the entry node: the peer may never have seen it.
// It is the collector of ratelimit_peer_errors_total{op, kind}, and of
// ratelimit_peer_checks_sent_total when the transport keeps statistics.
type peerErrors struct {
	errs  *prometheus.Desc
	sent  *prometheus.Desc
	mu    sync.Mutex
	count map[[2]string]uint64 // (op, kind) → failures
	stats func() transport.Stats
}

// Kinds of peer failures, the kind label of ratelimit_peer_errors_total.
const (
	peerErrTimeout     = "timeout"     // no answer in time
	peerErrUnreachable = "unreachable" // dial failed, connection broke, back-off
	peerErrRemote      = "remote"      // the peer answered with an error
	peerErrProtocol    = "protocol"    // a malformed, oversized or foreign-version frame
	peerErrClosed      = "closed"      // this node's transport is closed
	peerErrCanceled    = "canceled"    // the wait was ended: the caller gave up, or the owner left the ring
	peerErrOther       = "other"
)

func newPeerErrors() *peerErrors {
	return &peerErrors{
		errs: prometheus.NewDesc("ratelimit_peer_errors_total",
			"Requests to a peer that failed in the peer transport, counted on the node that sent them, by op (check: a forwarded check or batch; else the call's method) and kind: timeout, unreachable (dial failed, connection lost, back-off), remote (the peer answered an error), protocol (bad frame or version), closed (this node is stopping), canceled (the wait was ended: the caller gave up, or gossip dropped the owner from the ring), other.",
			[]string{"op", "kind"}, nil),
		sent: prometheus.NewDesc("ratelimit_peer_checks_sent_total",
			"Checks this node forwarded to their key's owner over the peer transport.",
			nil, nil),
		count: map[[2]string]uint64{},
	}
}

// register registers p with reg, as one of m's collectors.
func (p *peerErrors) register(reg prometheus.Registerer, m *metrics) error {
	if err := reg.Register(p); err != nil {
		return err
	}
	m.cols = append(m.cols, p)
	return nil
}

// kindOf classifies a transport error.
func kindOf(err error) string {
	switch {
	case errors.Is(err, transport.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return peerErrTimeout
	case errors.Is(err, context.Canceled):
		return peerErrCanceled
	case errors.Is(err, transport.ErrUnreachable):
		return peerErrUnreachable
	case errors.Is(err, transport.ErrRemote):
		return peerErrRemote
	case errors.Is(err, transport.ErrBadFrame), errors.Is(err, transport.ErrVersion), errors.Is(err, transport.ErrFrameTooLarge):
		return peerErrProtocol
	case errors.Is(err, transport.ErrClosed):
		return peerErrClosed
	}
	return peerErrOther
}

// failed counts err under op.
func (p *peerErrors) failed(op string, err error) {
	kind := kindOf(err)
	p.mu.Lock()
	p.count[[2]string{op, kind}]++
	p.mu.Unlock()
}

// total returns the failures counted, all ops and kinds together.
func (p *peerErrors) total() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n uint64
	for _, v := range p.count {
		n += v
	}
	return n
}

// wrap returns tr with its failures counted; it reads tr's statistics,
// if it keeps any, for the checks sent.
func (p *peerErrors) wrap(tr transport.Transport) transport.Transport {
	if t, ok := tr.(interface{ Stats() transport.Stats }); ok {
		p.mu.Lock()
		p.stats = t.Stats
		p.mu.Unlock()
	}
	return countingTransport{Transport: tr, p: p}
}

// Describe implements prometheus.Collector.
func (p *peerErrors) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.errs
	ch <- p.sent
}

// Collect implements prometheus.Collector.
func (p *peerErrors) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	stats := p.stats
	for k, v := range p.count {
		ch <- prometheus.MustNewConstMetric(p.errs, prometheus.CounterValue, float64(v), k[0], k[1])
	}
	p.mu.Unlock()
	if stats != nil {
		ch <- prometheus.MustNewConstMetric(p.sent, prometheus.CounterValue, float64(stats().ChecksSent))
	}
}

// countingTransport is a Transport whose outgoing failures are counted.
type countingTransport struct {
	transport.Transport
	p *peerErrors
}

func (c countingTransport) Check(ctx context.Context, addr string, item transport.CheckItem) (transport.CheckResult, error) {
	res, err := c.Transport.Check(ctx, addr, item)
	if err != nil {
		c.p.failed("check", err)
	}
	return res, err
}

func (c countingTransport) CheckMany(ctx context.Context, addr string, items []transport.CheckItem, out []transport.CheckResult) error {
	err := c.Transport.CheckMany(ctx, addr, items, out)
	if err != nil {
		c.p.failed("check", err)
	}
	return err
}

func (c countingTransport) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	b, err := c.Transport.Call(ctx, addr, method, body)
	if err != nil {
		c.p.failed(method, err)
	}
	return b, err
}

// Stats passes the statistics of the wrapped transport through.
func (c countingTransport) Stats() transport.Stats {
	if t, ok := c.Transport.(interface{ Stats() transport.Stats }); ok {
		return t.Stats()
	}
	return transport.Stats{}
}
