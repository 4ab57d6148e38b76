package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/vibewell/ratelimit/bucket"
)

// policyState is the replicated policy table: the raft FSM's data. Every
// node holds a full copy and reads it on every check, with no network.
type policyState struct {
	// Version counts the changes applied.
	Version uint64 `json:"version"`
	// Seeded is set once the table has been seeded from the configuration
	// of the node that started the cluster; later starts keep the table.
	Seeded   bool                     `json:"seeded"`
	Policies map[string]bucket.Policy `json:"policies"`
}

// Operations of a command.
const (
	opSeed           = "seed"
	opSetPolicy      = "set_policy"
	opDeletePolicy   = "delete_policy"
	opSetOverride    = "set_override"
	opDeleteOverride = "delete_override"
)

// command is one change of the policy table, as a raft log entry (JSON).
type command struct {
	Op       string          `json:"op"`
	Policy   *bucket.Policy  `json:"policy,omitempty"`
	Policies []bucket.Policy `json:"policies,omitempty"`
	Name     string          `json:"name,omitempty"`
	Key      string          `json:"key,omitempty"`
	Limit    int64           `json:"limit,omitempty"`
}

// apply returns the state after c, or an error (and s unchanged) when c
// does not apply: an unknown policy, an invalid result. It is
// deterministic, as the FSM requires.
func (s *policyState) apply(c command) (*policyState, error) {
	next := &policyState{Version: s.Version + 1, Seeded: s.Seeded, Policies: maps.Clone(s.Policies)}
	if next.Policies == nil {
		next.Policies = map[string]bucket.Policy{}
	}
	switch c.Op {
	case opSeed:
		if s.Seeded {
			return s, nil // seeded already: keep what the table holds
		}
		for _, p := range c.Policies {
			next.Policies[p.Name] = p.Clone()
		}
		next.Seeded = true
	case opSetPolicy:
		if c.Policy == nil {
			return s, fmt.Errorf("%w: no policy", bucket.ErrInvalidPolicy)
		}
		p := c.Policy.Clone()
		if err := p.Validate(); err != nil {
			return s, err
		}
		next.Policies[p.Name] = p
	case opDeletePolicy:
		if _, ok := next.Policies[c.Name]; !ok {
			return s, fmt.Errorf("%w: %q", ErrUnknownPolicy, c.Name)
		}
		delete(next.Policies, c.Name)
	case opSetOverride, opDeleteOverride:
		p, ok := next.Policies[c.Name]
		if !ok {
			return s, fmt.Errorf("%w: %q", ErrUnknownPolicy, c.Name)
		}
		p = p.Clone()
		if c.Op == opSetOverride {
			if p.Overrides == nil {
				p.Overrides = map[string]int64{}
			}
			p.Overrides[c.Key] = c.Limit
		} else {
			if _, ok := p.Overrides[c.Key]; !ok {
				return s, fmt.Errorf("%w: policy %q has no override for key %q", ErrUnknownOverride, c.Name, c.Key)
			}
			delete(p.Overrides, c.Key)
			if len(p.Overrides) == 0 {
				p.Overrides = nil
			}
		}
		if err := p.Validate(); err != nil {
			return s, err
		}
		next.Policies[p.Name] = p
	default:
		return s, fmt.Errorf("cluster: unknown policy command %q", c.Op)
	}
	return next, nil
}

// list returns the policies sorted by name.
func (s *policyState) list() []bucket.Policy {
	out := slices.Collect(maps.Values(s.Policies))
	slices.SortFunc(out, func(a, b bucket.Policy) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// errInvalidPolicy is bucket.ErrInvalidPolicy, named here for brevity.
var errInvalidPolicy = bucket.ErrInvalidPolicy

// ErrUnknownOverride: DeleteOverride names a key the policy has no
// override for.
// It wraps bucket.ErrUnknownOverride.
var ErrUnknownOverride = fmt.Errorf("cluster: %w", bucket.ErrUnknownOverride)

// SetPolicy adds or replaces a policy in the cluster's policy table. It
// returns once the change is committed (replicated to a quorum of voters)
// and applied on this node; every node then applies it from its next
// check, to existing counters too. Errors wrap bucket.ErrInvalidPolicy (a
// *bucket.FieldError names the field), ErrNoLeader, ErrClosed or ctx's
// error. A standalone node changes its own table.
func (n *Node) SetPolicy(ctx context.Context, p bucket.Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	return n.change(ctx, command{Op: opSetPolicy, Policy: &p})
}

// DeletePolicy removes a policy; checks of it then fail with
// ErrUnknownPolicy. See SetPolicy for when it returns.
func (n *Node) DeletePolicy(ctx context.Context, name string) error {
	if _, ok := n.Policy(name); !ok {
		return fmt.Errorf("%w: %q", ErrUnknownPolicy, name)
	}
	return n.change(ctx, command{Op: opDeletePolicy, Name: name})
}

// SetOverride sets the limit of one key under a policy. See SetPolicy for
// when it returns.
func (n *Node) SetOverride(ctx context.Context, policy, key string, limit int64) error {
	p, ok := n.Policy(policy)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownPolicy, policy)
	}
	if key == "" || len(key) > n.cfg.MaxKeyLen {
		return fmt.Errorf("%w: length %d, want 1 to %d bytes", ErrInvalidKey, len(key), n.cfg.MaxKeyLen)
	}
	p = p.Clone()
	if p.Overrides == nil {
		p.Overrides = map[string]int64{}
	}
	p.Overrides[key] = limit
	if err := p.Validate(); err != nil {
		return err
	}
	return n.change(ctx, command{Op: opSetOverride, Name: policy, Key: key, Limit: limit})
}

// DeleteOverride removes the override of one key, which then has the
// policy's limit again. See SetPolicy for when it returns.
func (n *Node) DeleteOverride(ctx context.Context, policy, key string) error {
	p, ok := n.Policy(policy)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownPolicy, policy)
	}
	if _, ok := p.Overrides[key]; !ok {
		return fmt.Errorf("%w: policy %q has no override for key %q", ErrUnknownOverride, policy, key)
	}
	return n.change(ctx, command{Op: opDeleteOverride, Name: policy, Key: key})
}

// change applies c through raft, or locally on a standalone node.
func (n *Node) change(ctx context.Context, c command) error {
	if n.closed.Load() {
		return ErrClosed
	}
	if n.raft != nil {
		return n.raft.propose(ctx, c)
	}
	_, err := n.applyCommand(c)
	return err
}

// applyCommand applies c to the node's table and publishes the result.
func (n *Node) applyCommand(c command) (*policyState, error) {
	n.stateMu.Lock()
	defer n.stateMu.Unlock()
	next, err := n.state.apply(c)
	if err != nil {
		return n.state, err
	}
	n.setStateLocked(next)
	return next, nil
}

// setStateLocked publishes st as the node's table; stateMu is held.
func (n *Node) setStateLocked(st *policyState) {
	n.state = st
	if !st.Seeded {
		return // until the table is seeded, checks use the configured policies
	}
	t, err := newPolicyTable(st.list(), n.cfg.Shadow, n.metrics)
	if err != nil {
		// Every policy was validated before it entered the log; a table
		// that fails here comes from a newer version's rules.
		n.log.Error("policy table rejected; keeping the previous one", "version", st.Version, "err", err)
		return
	}
	n.policies.Store(&t)
	if !n.tableLogged {
		n.tableLogged = true
		n.logTableDiff(st)
	}
}

// logTableDiff says, once, where the replicated table differs from this
// node's configured policies: after the first start, the table wins.
func (n *Node) logTableDiff(st *policyState) {
	var differ []string
	for _, p := range n.cfg.Policies {
		q, ok := st.Policies[p.Name]
		if !ok || q.Algorithm != p.Algorithm || q.Limit != p.Limit || q.Window != p.Window ||
			q.Burst != p.Burst || q.FailureMode != p.FailureMode || q.Shadow != p.Shadow || q.Replication != p.Replication || !maps.Equal(q.Overrides, p.Overrides) {
			differ = append(differ, p.Name)
		}
	}
	for name := range st.Policies {
		if !slices.ContainsFunc(n.cfg.Policies, func(p bucket.Policy) bool { return p.Name == name }) {
			differ = append(differ, name)
		}
	}
	if len(differ) > 0 {
		slices.Sort(differ)
		n.log.Warn("the replicated policy table differs from the configured policies; the table wins (change it with the admin API)",
			"policies", differ, "version", st.Version)
	}
}

func encodeCommand(c command) ([]byte, error) { return json.Marshal(c) }

func decodeCommand(b []byte) (command, error) {
	var c command
	err := json.Unmarshal(b, &c)
	return c, err
}
