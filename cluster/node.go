package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// Decision is the answer to a check; see bucket.Decision.
type Decision = bucket.Decision

// Errors returned by Node methods; test them with errors.Is.
var (
	// ErrUnknownPolicy: the check names a policy the table does not hold.
	ErrUnknownPolicy = errors.New("cluster: unknown policy")
	// ErrInvalidKey: the key is empty or longer than Config.MaxKeyLen.
	ErrInvalidKey = errors.New("cluster: invalid key")
	// ErrInvalidHits: hits is negative or above Config.MaxHits.
	ErrInvalidHits = errors.New("cluster: invalid hits")
	// ErrClosed: the node was closed.
	ErrClosed = errors.New("cluster: node closed")
)

// Node is one member of a rate-limiting cluster. It is safe for concurrent
// use.
type Node struct {
	cfg      Config
	log      *slog.Logger
	store    bucket.Store
	clock    bucket.Clock
	coarse   *coarseClock // the default clock, stopped on Close; or nil
	policies atomic.Pointer[policyTable]
	metrics  *metrics
	denials  *eventLog
	closed   atomic.Bool
	stop     chan struct{}
	wg       sync.WaitGroup
}

// Start validates cfg, starts a node and returns it ready for checks.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("cluster: metrics: %w", err)
	}
	table, err := newPolicyTable(cfg.Policies, cfg.Shadow, m)
	if err != nil {
		m.unregister()
		return nil, fmt.Errorf("cluster: config: Policies: %w", err)
	}
	var coarse *coarseClock
	switch {
	case cfg.Clock != nil:
	case cfg.ClockResolution < 0:
		cfg.Clock = bucket.SystemClock{}
	default:
		coarse = newCoarseClock(cfg.ClockResolution)
		cfg.Clock = coarse
	}
	n := &Node{
		coarse:  coarse,
		metrics: m,
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.NodeName),
		store:   cfg.Store,
		clock:   cfg.Clock,
		stop:    make(chan struct{}),
	}
	n.denials = newEventLog(n.log, cfg.DenialLogRate)
	n.policies.Store(&table)
	n.wg.Add(1)
	go n.sweepLoop()
	n.log.Info("node started", "policies", len(table), "shadow", cfg.Shadow)
	return n, nil
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.NodeName }

// Allow checks hits against the counter of key under the named policy and
// returns the decision. Over the limit is Allowed == false with a nil error;
// errors are ErrUnknownPolicy, ErrInvalidKey, ErrInvalidHits, ErrClosed, a
// store failure, or ctx's error. hits == 0 peeks without consuming.
func (n *Node) Allow(ctx context.Context, policy, key string, hits int64) (Decision, error) {
	if n.closed.Load() {
		return Decision{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, err
	}
	p := (*n.policies.Load())[policy]
	if p == nil {
		return Decision{}, fmt.Errorf("%w: %q", ErrUnknownPolicy, policy)
	}
	if len(key) == 0 || len(key) > n.cfg.MaxKeyLen {
		return Decision{}, fmt.Errorf("%w: length %d, want 1 to %d bytes", ErrInvalidKey, len(key), n.cfg.MaxKeyLen)
	}
	if hits < 0 || hits > n.cfg.MaxHits {
		return Decision{}, fmt.Errorf("%w: %d, want 0 to %d", ErrInvalidHits, hits, n.cfg.MaxHits)
	}
	now := n.clock.Now()
	d, err := n.store.Take(ctx, bucket.Key{Policy: policy, ID: key}, p.Policy, hits, now)
	if err != nil {
		n.metrics.errors.Inc()
		return Decision{}, err
	}
	d = d.ApplyShadow(&p.Policy)
	p.counters.record(d)
	if !d.Allowed || d.Shadowed {
		if n.cfg.LogDenials {
			n.denials.denied(policy, key, hits, d, now)
		}
	}
	return d, nil
}

// Policy returns the named policy. It is cheap enough for every check; its
// Overrides map is shared with the node and must not be modified.
func (n *Node) Policy(name string) (bucket.Policy, bool) {
	p := (*n.policies.Load())[name]
	if p == nil {
		return bucket.Policy{}, false
	}
	return p.Policy, true
}

// Policies returns the policy table, sorted by name.
func (n *Node) Policies() []bucket.Policy {
	t := *n.policies.Load()
	ps := make([]bucket.Policy, 0, len(t))
	for _, p := range t {
		ps = append(ps, p.Policy.Clone())
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	return ps
}

// Ready reports whether the node takes checks: started and not closed.
func (n *Node) Ready() bool { return !n.closed.Load() }

// Sweep drops idle counters now and returns how many; the node also does
// this every Config.SweepInterval.
func (n *Node) Sweep() int { return n.store.Sweep(n.clock.Now()) }

func (n *Node) sweepLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			if dropped := n.Sweep(); dropped > 0 {
				n.log.Debug("swept idle counters", "dropped", dropped)
			}
			n.denials.flush(n.clock.Now())
		}
	}
}

// Close stops the node. Checks after Close return ErrClosed. It waits for
// background work to end, or for ctx.
func (n *Node) Close(ctx context.Context) error {
	if !n.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(n.stop)
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if n.coarse != nil {
		n.coarse.close()
	}
	n.denials.flush(n.clock.Now())
	n.metrics.unregister()
	n.log.Info("node closed")
	return nil
}
