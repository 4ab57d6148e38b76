package cluster

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// DefaultPolicies returns the built-in policy table: the four endpoint
// policies of a typical web stack (default 60/60 s, auth 10/15 min,
// sensitive 30/60 min, admin 120/60 s, sliding windows) and api_limit, the
// per-client nginx zone (GCRA at 5 per second, burst 0 as nginx's default).
func DefaultPolicies() []bucket.Policy {
	return []bucket.Policy{
		{Name: "default", Limit: 60, Window: 60 * time.Second},
		{Name: "auth", Limit: 10, Window: 15 * time.Minute},
		{Name: "sensitive", Limit: 30, Window: 60 * time.Minute},
		{Name: "admin", Limit: 120, Window: 60 * time.Second},
		{Name: "api_limit", Algorithm: bucket.GCRA, Limit: 5, Window: time.Second},
	}
}

// MaxPolicies is the most policies the table holds. Every node holds the
// whole table and rebuilds it on each change, so it stays small; a
// SetPolicy of a new name beyond it is refused (ErrTooManyPolicies).
const MaxPolicies = 1000

// dependency says what depends on the built-in policy name, or "" when
// nothing outside the table does.
func dependency(name string) string {
	switch name {
	case "api_limit":
		return "the nginx snippet (deploy/nginx/ratelimit.conf) checks every request against it, and answers 500 without it"
	case "default", "auth", "sensitive", "admin":
		return "it is one of the four built-in endpoint policies that clients check by name"
	}
	return ""
}

// inUse is the error of deleting the built-in policy name without force.
func inUse(name, dep string) error {
	return fmt.Errorf("%w: %q is built in: %s; delete it with force", ErrPolicyInUse, name, dep)
}

// policyTable is an immutable name → policy map, swapped whole on change so
// that checks read it without a lock.
type policyTable map[string]*policyEntry

// policyEntry is a policy with its decision counters resolved once.
type policyEntry struct {
	bucket.Policy
	counters *decisionCounters
	// denied are the policy's denial sketches once it denied (denied.go),
	// kept here so that counting a denial needs no map lookup.
	denied atomic.Pointer[deniedPolicy]
}

func newPolicyTable(ps []bucket.Policy, shadowAll bool, m *metrics) (policyTable, error) {
	t := make(policyTable, len(ps))
	for _, p := range ps {
		if err := p.Validate(); err != nil {
			return nil, err
		}
		if _, dup := t[p.Name]; dup {
			return nil, fmt.Errorf("%w: policy %q defined twice", bucket.ErrInvalidPolicy, p.Name)
		}
		p = p.Clone()
		if shadowAll {
			p.Shadow = true
		}
		t[p.Name] = &policyEntry{Policy: p, counters: m.forPolicy(p.Name)}
	}
	return t, nil
}
