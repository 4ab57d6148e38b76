package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
)

// EmbeddedConfig configures an Embedded target.
type EmbeddedConfig struct {
	// Nodes is the number of in-process nodes. Default: 1. More than one
	// gossip on 127.0.0.1 with cluster.LocalGossip timings (unless Node
	// sets them) and join the first.
	Nodes int
	// Node is the config of every node; each gets a unique NodeName when it
	// has none. Default: the zero cluster.Config (the default policies).
	Node cluster.Config
	// Configure, when set, adjusts node i's copy of Node before it starts
	// (e.g. a metrics registry of its own).
	Configure func(i int, cfg *cluster.Config)
}

// Embedded is a Target of in-process cluster nodes: checks go through
// node.Allow, spread round-robin over the nodes. It is safe for concurrent
// use.
type Embedded struct {
	nodes []*cluster.Node
	next  atomic.Uint64
}

var _ Target = (*Embedded)(nil)

// NewEmbedded starts cfg.Nodes nodes and returns them as a Target.
func NewEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Nodes <= 0 {
		cfg.Nodes = 1
	}
	nodes, err := startNodes(ctx, cfg.Nodes, cfg.Node, cfg.Configure)
	if err != nil {
		return nil, err
	}
	return &Embedded{nodes: nodes}, nil
}

// startNodes starts n nodes of base config joined into one cluster on
// loopback (gossip on 127.0.0.1:0, local gossip timings), and waits until
// every node has joined and has all n nodes in its ownership ring.
func startNodes(ctx context.Context, n int, base cluster.Config, configure func(int, *cluster.Config)) ([]*cluster.Node, error) {
	nodes := make([]*cluster.Node, 0, n)
	fail := func(err error) ([]*cluster.Node, error) {
		for _, nd := range nodes {
			_ = nd.Close(context.Background())
		}
		return nil, err
	}
	if n > 1 && base.ClusterKey == nil && !base.Insecure {
		// The nodes of one embedded cluster share a key of their own.
		k, err := cluster.NewClusterKey(nil)
		if err != nil {
			return nil, fmt.Errorf("bench: cluster key: %w", err)
		}
		base.ClusterKey = k
	}
	for i := range n {
		cfg := base
		if n > 1 {
			if cfg.GossipAddr == "" {
				cfg.GossipAddr = "127.0.0.1:0"
			}
			if cfg.Gossip == (cluster.GossipConfig{}) {
				cfg.Gossip = cluster.LocalGossip()
			}
			if i > 0 {
				cfg.Seeds = []string{nodes[0].Addrs().Gossip}
				if len(cfg.ClusterKey) == 0 {
					cfg.ClusterKey, _ = nodes[0].ClusterKey() // the key the first node made
				}
			}
		}
		if configure != nil {
			configure(i, &cfg)
		}
		node, err := cluster.Start(ctx, cfg)
		if err != nil {
			return fail(fmt.Errorf("bench: start node %d: %w", i, err))
		}
		nodes = append(nodes, node)
	}
	if n == 1 {
		return nodes, nil
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	for {
		converged := true
		for _, nd := range nodes {
			converged = converged && nd.Ready() && nd.Status().RingMembers == n
		}
		if converged {
			return nodes, nil
		}
		select {
		case <-wctx.Done():
			return fail(fmt.Errorf("bench: %d nodes did not converge: %w", n, wctx.Err()))
		case <-tk.C:
		}
	}
}

// Nodes returns the target's nodes.
func (e *Embedded) Nodes() []*cluster.Node { return e.nodes }

// Check decides through the next node's Allow.
func (e *Embedded) Check(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	n := e.nodes[0]
	if len(e.nodes) > 1 {
		n = e.nodes[e.next.Add(1)%uint64(len(e.nodes))]
	}
	return n.Allow(ctx, policy, key, hits)
}

// Close closes every node.
func (e *Embedded) Close(ctx context.Context) error {
	var errs []error
	for _, n := range e.nodes {
		errs = append(errs, n.Close(ctx))
	}
	return errors.Join(errs...)
}

// StoreTarget is a Target on a bucket.Store directly (the Redis store, or
// the memory store as a baseline): no node, no network but the store's own.
// It is safe for concurrent use.
type StoreTarget struct {
	store    bucket.Store
	policies map[string]bucket.Policy
	clock    bucket.Clock
	close    func(context.Context) error
}

var _ BatchTarget = (*StoreTarget)(nil)

// StoreConfig configures a StoreTarget.
type StoreConfig struct {
	// Store decides the checks. Required.
	Store bucket.Store
	// Policies are the policies checks may name. Default:
	// cluster.DefaultPolicies().
	Policies []bucket.Policy
	// Clock gives each check's time. Default: bucket.SystemClock{}.
	Clock bucket.Clock
	// Close, if set, is called by StoreTarget.Close (e.g. to close the
	// Redis client).
	Close func(context.Context) error
}

// NewStoreTarget returns a Target that checks against cfg.Store.
func NewStoreTarget(cfg StoreConfig) (*StoreTarget, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: no store", ErrConfig)
	}
	if cfg.Policies == nil {
		cfg.Policies = cluster.DefaultPolicies()
	}
	if cfg.Clock == nil {
		cfg.Clock = bucket.SystemClock{}
	}
	t := &StoreTarget{store: cfg.Store, policies: make(map[string]bucket.Policy), clock: cfg.Clock, close: cfg.Close}
	for _, p := range cfg.Policies {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		t.policies[p.Name] = p
	}
	return t, nil
}

// errUnknownPolicy is a check naming a policy the StoreTarget lacks.
var errUnknownPolicy = &kindError{kind: "unknown_policy", err: errors.New("bench: unknown policy")}

// Check takes hits from the store at the clock's time.
func (t *StoreTarget) Check(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	p, ok := t.policies[policy]
	if !ok {
		return bucket.Decision{}, errUnknownPolicy
	}
	d, err := t.store.Take(ctx, bucket.Key{Policy: policy, ID: key}, p, hits, t.clock.Now())
	if err != nil {
		return d, err
	}
	return d.ApplyShadow(&p), nil
}

// CheckBatch decides checks in one round trip when the store is a
// bucket.BatchStore, else one by one.
func (t *StoreTarget) CheckBatch(ctx context.Context, checks []Check, out []Outcome) error {
	bs, ok := t.store.(bucket.BatchStore)
	if !ok {
		for i, c := range checks {
			d, err := t.Check(ctx, c.Policy, c.Key, c.Hits)
			out[i] = Outcome{Decision: d, Err: err}
		}
		return nil
	}
	bc := make([]bucket.Check, len(checks))
	ds := make([]bucket.Decision, len(checks))
	for i, c := range checks {
		p, ok := t.policies[c.Policy]
		if !ok {
			return errUnknownPolicy
		}
		bc[i] = bucket.Check{Key: bucket.Key{Policy: c.Policy, ID: c.Key}, Policy: p, Hits: c.Hits}
	}
	if err := bs.TakeBatch(ctx, bc, t.clock.Now(), ds); err != nil {
		return err
	}
	for i := range checks {
		p := t.policies[checks[i].Policy]
		out[i] = Outcome{Decision: ds[i].ApplyShadow(&p)}
	}
	return nil
}

// Close calls StoreConfig.Close, if set.
func (t *StoreTarget) Close(ctx context.Context) error {
	if t.close != nil {
		return t.close(ctx)
	}
	return nil
}
