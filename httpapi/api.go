package httpapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// Checker decides checks and knows the policy table. *cluster.Node satisfies
// it. Implementations must be safe for concurrent use.
//
// If a Checker also has a method Ready() bool, /readyz reports it.
type Checker interface {
	// Allow applies hits to the counter of key under the named policy. Over
	// the limit is a Decision with Allowed == false and a nil error.
	Allow(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error)
	// Policy returns the named policy, or false if there is none.
	Policy(name string) (bucket.Policy, bool)
	// Policies returns the whole policy table.
	Policies() []bucket.Policy
}

// readier is the optional interface /readyz uses.
type readier interface{ Ready() bool }

// CheckRequest is one check: the body of POST /v1/check and an item of a
// batch.
type CheckRequest struct {
	// Policy names the policy, e.g. "auth".
	Policy string `json:"policy" msgpack:"policy"`
	// Key is what is limited, e.g. "ip:203.0.113.7".
	Key string `json:"key" msgpack:"key"`
	// Hits is the number of hits to take; 0 peeks without consuming. In a
	// request body, an omitted hits means 1; this struct always sends it.
	Hits int64 `json:"hits" msgpack:"hits"`
}

// CheckResponse is a decision as the HTTP API returns it: the body of
// POST /v1/check. Durations are whole milliseconds, rounded up.
type CheckResponse struct {
	// Allowed is false when the check is over the limit.
	Allowed bool `json:"allowed"`
	// Policy is the policy the check was decided under.
	Policy string `json:"policy"`
	// Limit is the capacity that Remaining counts down from.
	Limit int64 `json:"limit"`
	// Remaining is how many more hits would be allowed now.
	Remaining int64 `json:"remaining"`
	// ResetAfterMS is the time until the counter is back to full capacity.
	ResetAfterMS int64 `json:"reset_after_ms"`
	// RetryAfterMS is the time until the same check would pass; 0 when
	// allowed.
	RetryAfterMS int64 `json:"retry_after_ms"`
}

// Decision converts r back to a bucket.Decision (at millisecond precision).
func (r CheckResponse) Decision() bucket.Decision {
	return bucket.Decision{
		Allowed:    r.Allowed,
		Limit:      r.Limit,
		Remaining:  r.Remaining,
		ResetAfter: time.Duration(r.ResetAfterMS) * time.Millisecond,
		RetryAfter: time.Duration(r.RetryAfterMS) * time.Millisecond,
	}
}

// NewCheckResponse is the response for decision d under the named policy.
func NewCheckResponse(policy string, d bucket.Decision) CheckResponse {
	return CheckResponse{
		Allowed:      d.Allowed,
		Policy:       policy,
		Limit:        d.Limit,
		Remaining:    d.Remaining,
		ResetAfterMS: ceilMS(d.ResetAfter),
		RetryAfterMS: ceilMS(d.RetryAfter),
	}
}

// BatchRequest is the body of POST /v1/check/batch.
type BatchRequest struct {
	// Checks are decided in order; at most Options.MaxBatch of them.
	Checks []CheckRequest `json:"checks" msgpack:"checks"`
}

// BatchResponse is the answer to POST /v1/check/batch: one result per
// check, in the order of the request.
type BatchResponse struct {
	// Results has one entry per check of the request, in its order.
	Results []CheckResult `json:"results"`
}

// CheckResult is the outcome of one check of a batch: a decision, or an
// error when Error is set (then the decision fields are zero).
type CheckResult struct {
	CheckResponse
	// Error says why the check was not decided; empty on success.
	Error string `json:"error,omitempty"`
	// Field names the request field at fault, if any ("policy", "key",
	// "hits").
	Field string `json:"field,omitempty"`
	// Status is the HTTP status the check would have had alone (400 for bad
	// input, 503 for a backend failure); 0 on success.
	Status int `json:"status,omitempty"`
}

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	// Error describes the problem.
	Error string `json:"error"`
	// Field names the request field at fault, if any.
	Field string `json:"field,omitempty"`
}

// PoliciesResponse is the body of GET /v1/policies.
type PoliciesResponse struct {
	// Policies is the policy table, each policy in its JSON form.
	Policies []bucket.Policy `json:"policies"`
}

// ErrStatus is matched (errors.Is) by the *StatusError a Client returns for
// an answer that is not a decision.
var ErrStatus = errors.New("httpapi: unexpected status")

// StatusError is an answer of the server that is not a decision: bad input,
// an unknown policy, a backend failure. It matches ErrStatus.
type StatusError struct {
	// StatusCode is the HTTP status, e.g. 400 or 503.
	StatusCode int
	// Message is the server's error message, or the start of the body if it
	// was not an ErrorResponse.
	Message string
	// Field names the request field at fault, if the server said.
	Field string
}

// Error returns the status, the server's message and the field at fault.
func (e *StatusError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("httpapi: status %d: %s (field %s)", e.StatusCode, e.Message, e.Field)
	}
	return fmt.Sprintf("httpapi: status %d: %s", e.StatusCode, e.Message)
}

// Is makes errors.Is(err, ErrStatus) hold.
func (e *StatusError) Is(target error) bool { return target == ErrStatus }

// ceilMS is d in whole milliseconds, rounded up.
func ceilMS(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	n := int64(d / time.Millisecond)
	if d%time.Millisecond != 0 {
		n++
	}
	return n
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	n := int64(d / time.Second)
	if d%time.Second != 0 {
		n++
	}
	return n
}
