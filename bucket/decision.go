package bucket

import (
	"context"
	"encoding/binary"
	"errors"
	"time"
)

// Decision is the answer to one check. The library, the HTTP API and the
// rate-limit headers all read this one struct.
type Decision struct {
	// Allowed is false when the check is over the limit.
	Allowed bool
	// Limit is the capacity that Remaining counts down from: the (override)
	// limit for the counting algorithms, Burst+1 for GCRA, Limit+Burst for a
	// token bucket.
	Limit int64
	// Remaining is how many more hits would be allowed now.
	Remaining int64
	// ResetAfter is the time until the counter is back to its full capacity.
	ResetAfter time.Duration
	// RetryAfter is the time until the same check would be allowed; zero when
	// Allowed. When the hits exceed the capacity, no wait makes the check
	// pass, and RetryAfter equals ResetAfter.
	RetryAfter time.Duration
	// Shadowed is true when the check was over the limit but allowed because
	// the policy is in shadow mode.
	Shadowed bool
}

// ApplyShadow allows a denied decision of a shadow policy and marks it
// Shadowed. It returns d unchanged otherwise.
func (d Decision) ApplyShadow(p *Policy) Decision {
	if p.Shadow && !d.Allowed {
		d.Allowed, d.Shadowed, d.RetryAfter = true, true, 0
	}
	return d
}

// Key identifies one counter: a key ID under a policy.
type Key struct {
	Policy string // policy name, e.g. "auth"
	ID     string // what is limited, e.g. "ip:1.2.3.4"
}

// AppendBinary appends an unambiguous encoding of k to b: the policy's
// length as a uvarint, the policy, then the ID. ("a_b","c") and ("a","b_c")
// never collide, as they would if joined with a separator.
func (k Key) AppendBinary(b []byte) ([]byte, error) {
	return k.appendTo(b), nil
}

func (k Key) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(k.Policy)))
	b = append(b, k.Policy...)
	return append(b, k.ID...)
}

// decodeKey reverses appendTo.
func decodeKey(s string) (Key, bool) {
	n, w := binary.Uvarint([]byte(s[:min(len(s), binary.MaxVarintLen64)]))
	if w <= 0 || uint64(len(s)-w) < n {
		return Key{}, false
	}
	return Key{Policy: s[w : w+int(n)], ID: s[w+int(n):]}, true
}

// Store keeps counters and decides checks against them. Implementations are
// safe for concurrent use.
type Store interface {
	// Take applies hits to the counter of k under p at time now. hits == 0
	// peeks: the decision says whether one hit would pass, and nothing is
	// consumed. Over the limit is a Decision with Allowed == false and a nil
	// error; the error reports a backend failure only.
	Take(ctx context.Context, k Key, p Policy, hits int64, now time.Time) (Decision, error)
	// Sweep drops the counters that are idle at now (equal to a fresh
	// counter) and returns how many it dropped. Stores whose backend expires
	// counters itself return 0.
	Sweep(now time.Time) int
}

// ErrBackend is wrapped by store errors that come from the backend (a
// network or server failure), as opposed to bad arguments.
var ErrBackend = errors.New("bucket: store backend failure")

// Clock tells the time. Inject one to control time in tests.
type Clock interface {
	Now() time.Time // the current time
}

// SystemClock is the Clock of the operating system.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }
