package bucket

import (
	"context"
	"time"
)

// Check is one check of a batch: hits against the counter of Key under
// Policy (whose Limit is the policy's own; stores resolve overrides).
type Check struct {
	Key    Key    // the counter
	Policy Policy // the policy, with its own Limit
	Hits   int64  // hits to take; 0 peeks
}

// BatchStore is a Store that decides many checks in one round trip to its
// backend. Callers type-assert a Store to it and fall back to Take in a
// loop.
type BatchStore interface {
	Store
	// TakeBatch decides checks[i] into out[i], in order, all at time now.
	// out must be at least as long as checks. An error (a backend failure)
	// applies to every check of the batch.
	TakeBatch(ctx context.Context, checks []Check, now time.Time, out []Decision) error
}

// Request is one check of a node-level batch: hits against the key under
// the named policy.
type Request struct {
	Policy string // the policy's name
	Key    string // the key checked under it
	Hits   int64  // hits to take; 0 peeks
}

// Result is the answer to one Request: a decision, or the error a single
// check would have returned.
type Result struct {
	Decision       // the decision, when Err is nil
	Err      error // why the check was not decided, as Allow would return it
}
