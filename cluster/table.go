package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

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
	// Force deletes a built-in policy that other components depend on.
	Force bool `json:"force,omitempty"`
}

// MaxCommandBytes bounds one policy command (a raft log entry): a policy
// with MaxOverrides overrides of 512-byte keys takes about half of it.
const MaxCommandBytes = 1 << 20

// errMalformedCommand marks a command that is not one: undecodable, too
// large, or with unknown fields.
var errMalformedCommand = fmt.Errorf("cluster: malformed policy command: %w", errInvalidPolicy)

// validate checks c on its own, before it enters the log and again before
// the state machine applies it: the operation is known, every policy
// valid, names and keys well formed. maxKeyLen is the key-length cap of
// checks, which override keys obey too.
func (c *command) validate(maxKeyLen int) error {
	key := func() error {
		if c.Key == "" || len(c.Key) > maxKeyLen {
			return fmt.Errorf("%w: override key of %d bytes, want 1 to %d", errInvalidPolicy, len(c.Key), maxKeyLen)
		}
		return nil
	}
	policy := func(p *bucket.Policy) error {
		if err := p.Validate(); err != nil {
			return err
		}
		for k := range p.Overrides {
			if len(k) > maxKeyLen {
				return &bucket.FieldError{Policy: p.Name, Field: "overrides", Reason: fmt.Sprintf("key of %d bytes, longer than %d", len(k), maxKeyLen)}
			}
		}
		return nil
	}
	name := func() error {
		if err := bucket.ValidateName(c.Name); err != nil {
			return &bucket.FieldError{Field: "name", Reason: err.Error()}
		}
		return nil
	}
	switch c.Op {
	case opSeed:
		if len(c.Policies) > MaxPolicies {
			return fmt.Errorf("%w: seed of %d policies", ErrTooManyPolicies, len(c.Policies))
		}
		seen := make(map[string]bool, len(c.Policies))
		for i := range c.Policies {
			if err := policy(&c.Policies[i]); err != nil {
				return err
			}
			if seen[c.Policies[i].Name] {
				return fmt.Errorf("%w: policy %q defined twice", errInvalidPolicy, c.Policies[i].Name)
			}
			seen[c.Policies[i].Name] = true
		}
	case opSetPolicy:
		if c.Policy == nil {
			return fmt.Errorf("%w: no policy", errInvalidPolicy)
		}
		return policy(c.Policy)
	case opDeletePolicy:
		return name()
	case opSetOverride:
		if err := name(); err != nil {
			return err
		}
		if c.Limit < 1 {
			return &bucket.FieldError{Policy: c.Name, Field: "limit", Reason: fmt.Sprintf("must be at least 1, got %d", c.Limit)}
		}
		return key()
	case opDeleteOverride:
		if err := name(); err != nil {
			return err
		}
		return key()
	default:
		return fmt.Errorf("%w: unknown operation %q", errMalformedCommand, c.Op)
	}
	return nil
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
		if _, ok := next.Policies[p.Name]; !ok && len(next.Policies) >= MaxPolicies {
			return s, fmt.Errorf("%w: %q not added", ErrTooManyPolicies, p.Name)
		}
		next.Policies[p.Name] = p
	case opDeletePolicy:
		if _, ok := next.Policies[c.Name]; !ok {
			return s, fmt.Errorf("%w: %q", ErrUnknownPolicy, c.Name)
		}
		if dep := dependency(c.Name); dep != "" && !c.Force {
			return s, inUse(c.Name, dep)
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

// SetPolicy adds or replaces a policy in the cluster's policy table. It
// returns once the change is committed (replicated to a quorum of voters)
// and applied on this node; every node then applies it from its next
// check, to existing counters too. Errors wrap bucket.ErrInvalidPolicy (a
// *bucket.FieldError names the field), ErrNoLeader, ErrClosed or ctx's
// error. A standalone node changes its own table.
func (n *Node) SetPolicy(ctx context.Context, p bucket.Policy) error {
	return n.change(ctx, command{Op: opSetPolicy, Policy: &p})
}

// DeletePolicy removes a policy; checks of it then fail with
// ErrUnknownPolicy. A built-in policy that another component depends on
// (api_limit for nginx, and default, auth, sensitive and admin) is not
// deleted: the error wraps ErrPolicyInUse and says what depends on it.
// See SetPolicy for when it returns.
func (n *Node) DeletePolicy(ctx context.Context, name string) error {
	return n.deletePolicy(ctx, name, false)
}

// ForceDeletePolicy is DeletePolicy, built-in policies included.
func (n *Node) ForceDeletePolicy(ctx context.Context, name string) error {
	return n.deletePolicy(ctx, name, true)
}

func (n *Node) deletePolicy(ctx context.Context, name string, force bool) error {
	if _, ok := n.Policy(name); !ok {
		return fmt.Errorf("%w: %q", ErrUnknownPolicy, name)
	}
	if dep := dependency(name); dep != "" && !force {
		return inUse(name, dep)
	}
	return n.change(ctx, command{Op: opDeletePolicy, Name: name, Force: force})
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

// change applies c through raft, or locally on a standalone node, once
// it is valid.
func (n *Node) change(ctx context.Context, c command) error {
	if n.closed.Load() {
		return ErrClosed
	}
	if err := c.validate(n.cfg.MaxKeyLen); err != nil {
		return err
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
	if old := n.policies.Load(); old != nil {
		for name := range *old {
			if _, ok := t[name]; !ok {
				n.metrics.dropPolicy(name)
			}
		}
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

// decodeCommand reads one command strictly: at most MaxCommandBytes, one
// JSON object of known fields, named exactly (encoding/json would match
// "OP" to "op"), each once.
func decodeCommand(b []byte) (command, error) {
	var c command
	if len(b) > MaxCommandBytes {
		return c, fmt.Errorf("%w: %d bytes, at most %d", errMalformedCommand, len(b), MaxCommandBytes)
	}
	if err := exactFields(b, "op", "policy", "policies", "name", "key", "limit", "force"); err != nil {
		return c, fmt.Errorf("%w: %w", errMalformedCommand, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return command{}, fmt.Errorf("%w: %w", errMalformedCommand, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return command{}, fmt.Errorf("%w: data after the command", errMalformedCommand)
	}
	return c, nil
}

// exactFields checks that the JSON object b names only the given fields,
// each at most once and spelled exactly.
func exactFields(b []byte, names ...string) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("want a JSON object")
	}
	seen := make(map[string]bool, len(names))
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		k, _ := t.(string)
		if !slices.Contains(names, k) {
			return fmt.Errorf("unknown field %q", k)
		}
		if seen[k] {
			return fmt.Errorf("field %q given twice", k)
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

// dropPolicy removes the series of a deleted policy, so that the metrics
// of a table with churning policies stay bounded.
func (m *metrics) dropPolicy(name string) {
	if m == nil {
		return
	}
	m.decisions.DeletePartialMatch(prometheus.Labels{"policy": name})
	m.fallbacks.DeletePartialMatch(prometheus.Labels{"policy": name})
}
