package bucket

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Algorithm selects how a policy counts hits. The zero value is SlidingWindow.
type Algorithm uint8

// The algorithms a policy can use.
const (
	SlidingWindow Algorithm = iota // N per rolling window; never over-admits
	GCRA                           // nginx limit_req: rate with burst, nodelay
	TokenBucket                    // limit+burst tokens, refilled at limit per window
	FixedWindow                    // N per epoch-aligned window
)

var algorithmNames = [...]string{"sliding_window", "gcra", "token_bucket", "fixed_window"}

// String returns the algorithm's name as used in policy files and the API.
func (a Algorithm) String() string {
	if int(a) < len(algorithmNames) {
		return algorithmNames[a]
	}
	return fmt.Sprintf("algorithm(%d)", uint8(a))
}

// MarshalText implements encoding.TextMarshaler.
func (a Algorithm) MarshalText() ([]byte, error) {
	if int(a) >= len(algorithmNames) {
		return nil, fmt.Errorf("bucket: unknown algorithm %d", uint8(a))
	}
	return []byte(a.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler. An empty text is the
// default, SlidingWindow.
func (a *Algorithm) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*a = SlidingWindow
		return nil
	}
	for i, n := range algorithmNames {
		if string(b) == n {
			*a = Algorithm(i)
			return nil
		}
	}
	return fmt.Errorf("unknown algorithm %q (want sliding_window, gcra, token_bucket or fixed_window)", b)
}

// FailureMode says what a check does when the counter's owner (a peer node or
// Redis) cannot be reached in time. The zero value is FailLocal.
type FailureMode uint8

// The failure modes.
const (
	FailLocal  FailureMode = iota // enforce limit / live nodes on this node alone
	FailOpen                      // allow
	FailClosed                    // deny
)

var failureModeNames = [...]string{"local", "open", "closed"}

// String returns the mode's name as used in policy files and the API.
func (m FailureMode) String() string {
	if int(m) < len(failureModeNames) {
		return failureModeNames[m]
	}
	return fmt.Sprintf("failure_mode(%d)", uint8(m))
}

// MarshalText implements encoding.TextMarshaler.
func (m FailureMode) MarshalText() ([]byte, error) {
	if int(m) >= len(failureModeNames) {
		return nil, fmt.Errorf("bucket: unknown failure mode %d", uint8(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler. An empty text is the
// default, FailLocal.
func (m *FailureMode) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*m = FailLocal
		return nil
	}
	for i, n := range failureModeNames {
		if string(b) == n {
			*m = FailureMode(i)
			return nil
		}
	}
	return fmt.Errorf("unknown failure mode %q (want local, open or closed)", b)
}

// Replication says when a cluster node copies a change of a counter to
// the node that would own its key if this one failed (its successor). The
// zero value is ReplicateAsync.
type Replication uint8

// The replication modes.
const (
	// ReplicateAsync answers at once; the change follows in the next round
	// of copies (one round trip later), so a crash forgives at most that
	// round's hits.
	ReplicateAsync Replication = iota
	// ReplicateSync answers an allowed check only once its change is on
	// the successor, at the cost of one more round trip: a crash of the
	// owner forgives no hit.
	ReplicateSync
)

var replicationNames = [...]string{"async", "sync"}

// String returns the mode's name as used in policy files and the API.
func (r Replication) String() string {
	if int(r) < len(replicationNames) {
		return replicationNames[r]
	}
	return fmt.Sprintf("replication(%d)", uint8(r))
}

// MarshalText implements encoding.TextMarshaler.
func (r Replication) MarshalText() ([]byte, error) {
	if int(r) >= len(replicationNames) {
		return nil, fmt.Errorf("bucket: unknown replication %d", uint8(r))
	}
	return []byte(r.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler. An empty text is the
// default, ReplicateAsync.
func (r *Replication) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*r = ReplicateAsync
		return nil
	}
	for i, n := range replicationNames {
		if string(b) == n {
			*r = Replication(i)
			return nil
		}
	}
	return fmt.Errorf("unknown replication %q (want async or sync)", b)
}

// Limits on policy values. They keep every computation exact in int64 and in
// the float64 arithmetic of the Redis scripts (integers below 2^53).
const (
	// MaxPolicyName is the longest policy name, in bytes.
	MaxPolicyName = 64
	// MaxWindow is the longest window a policy may have.
	MaxWindow = 366 * 24 * time.Hour
	// MaxCount is the largest limit of a counting algorithm
	// (sliding_window, fixed_window): counters are 32 bits wide.
	MaxCount = math.MaxUint32
	// MaxOverrides is the most per-key overrides a policy may hold: each
	// is replicated to every node and copied on every change of the
	// policy, so the table stays small.
	MaxOverrides = 1000
	// maxExact bounds (limit+burst) × interval in microseconds.
	maxExact = 1 << 53
)

// Policy is a named limit. The zero value of every field but Name and Limit
// is a usable default; Window defaults to nothing, so set it.
type Policy struct {
	// Name identifies the policy, e.g. "auth". Letters, digits, '_', '-', '.'.
	Name string
	// Algorithm defaults to SlidingWindow.
	Algorithm Algorithm
	// Limit is the number of hits allowed per Window. For GCRA and
	// TokenBucket it is the rate: Limit per Window (nginx 5r/s = 5 per 1s).
	Limit int64
	// Window is the period of Limit, a whole number of milliseconds.
	Window time.Duration
	// Burst is the extra capacity of GCRA and TokenBucket: GCRA admits
	// Burst+1 checks at once, a token bucket holds Limit+Burst tokens.
	// It must be zero for the counting algorithms.
	Burst int64
	// FailureMode applies when the counter's owner cannot be reached.
	FailureMode FailureMode
	// Shadow decides and counts but always allows: a dry run.
	Shadow bool
	// Replication says whether an allowed check waits until the key's
	// successor has its change (ReplicateSync), for policies where one
	// extra hit after a crash matters.
	Replication Replication
	// Overrides replaces Limit for particular keys, e.g. {"user:42": 100}.
	Overrides map[string]int64
}

// ErrInvalidPolicy is wrapped by every error that Validate returns.
var ErrInvalidPolicy = errors.New("bucket: invalid policy")

// ErrUnknownPolicy is wrapped by errors about a policy name that a policy
// table does not hold, so that callers in other packages can test for it.
var ErrUnknownPolicy = errors.New("unknown policy")

// ErrInvalidKey is wrapped by errors about a key that is empty or too
// long.
var ErrInvalidKey = errors.New("invalid key")

// ErrInvalidHits is wrapped by errors about hits out of range.
var ErrInvalidHits = errors.New("invalid hits")

// ErrUnknownOverride is wrapped by errors about a key that a policy has no
// override for.
var ErrUnknownOverride = errors.New("unknown override")

// ErrPolicyInUse is wrapped by errors about deleting a policy that other
// components depend on (nginx's api_limit, the built-in endpoint
// policies) without forcing it.
var ErrPolicyInUse = errors.New("policy in use")

// FieldError names the policy field that failed validation.
type FieldError struct {
	Policy string // the policy's name, possibly empty
	Field  string // the JSON name of the field, e.g. "window_ms"
	Reason string // what is wrong with it
}

// Error says which policy and field, and why.
func (e *FieldError) Error() string {
	if e.Policy == "" {
		return fmt.Sprintf("policy: %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("policy %q: %s: %s", e.Policy, e.Field, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalidPolicy) hold.
func (e *FieldError) Unwrap() error { return ErrInvalidPolicy }

// Validate checks every field and returns a *FieldError naming the first bad
// one, or nil.
func (p *Policy) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &FieldError{Policy: p.Name, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if err := ValidateName(p.Name); err != nil {
		return bad("name", "%v", err)
	}
	if int(p.Algorithm) >= len(algorithmNames) {
		return bad("algorithm", "unknown algorithm %d", p.Algorithm)
	}
	if int(p.FailureMode) >= len(failureModeNames) {
		return bad("failure_mode", "unknown failure mode %d", p.FailureMode)
	}
	if int(p.Replication) >= len(replicationNames) {
		return bad("replication", "unknown replication %d", p.Replication)
	}
	switch {
	case p.Window <= 0:
		return bad("window_ms", "must be at least 1 ms, got %v", p.Window)
	case p.Window%time.Millisecond != 0:
		return bad("window_ms", "must be a whole number of milliseconds, got %v", p.Window)
	case p.Window > MaxWindow:
		return bad("window_ms", "must be at most %d ms, got %d", MaxWindow.Milliseconds(), p.Window.Milliseconds())
	}
	if err := p.checkLimit(p.Limit, 0); err != nil {
		return bad("limit", "%v", err)
	}
	if p.Burst < 0 {
		return bad("burst", "must not be negative, got %d", p.Burst)
	}
	if p.Burst > 0 && !p.Algorithm.rated() {
		return bad("burst", "only gcra and token_bucket take a burst; %s counts hits per window", p.Algorithm)
	}
	if err := p.checkLimit(p.Limit, p.Burst); err != nil {
		return bad("burst", "%v", err) // the limit alone passed
	}
	if len(p.Overrides) > MaxOverrides {
		return bad("overrides", "%d overrides, at most %d", len(p.Overrides), MaxOverrides)
	}
	for id, l := range p.Overrides {
		if id == "" {
			return bad("overrides", "empty key")
		}
		if err := p.checkLimit(l, p.Burst); err != nil {
			return bad("overrides", "key %q: %v", id, err)
		}
	}
	return nil
}

// checkLimit checks the limit l of a policy with burst.
func (p *Policy) checkLimit(l, burst int64) error {
	if l < 1 {
		return fmt.Errorf("must be at least 1, got %d", l)
	}
	if !p.Algorithm.rated() {
		if l > MaxCount {
			return fmt.Errorf("must be at most %d for %s, got %d", int64(MaxCount), p.Algorithm, l)
		}
		return nil
	}
	w := p.Window.Microseconds()
	if w/l < 1 {
		return fmt.Errorf("rate %d per %v is above one per microsecond", l, p.Window)
	}
	c := l + burst
	switch {
	case c < 0:
		return fmt.Errorf("limit %d + burst %d overflows", l, burst)
	case c > maxExact/(w/l):
		return fmt.Errorf("capacity %d × interval %dµs is above 2^53µs", c, w/l)
	}
	return nil
}

// ValidateName reports whether name can name a policy.
func ValidateName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if len(name) > MaxPolicyName {
		return fmt.Errorf("must be at most %d bytes, got %d", MaxPolicyName, len(name))
	}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return fmt.Errorf("%q: only letters, digits, '_', '-' and '.' are allowed", name)
		}
	}
	return nil
}

// rated reports whether the algorithm is a rate with burst rather than a
// count per window.
func (a Algorithm) rated() bool { return a == GCRA || a == TokenBucket }

// LimitFor returns the limit that applies to the key id: its override, or
// Limit.
func (p *Policy) LimitFor(id string) int64 {
	if len(p.Overrides) > 0 {
		if l, ok := p.Overrides[id]; ok {
			return l
		}
	}
	return p.Limit
}

// Capacity is the most hits a fresh key can take at once: Limit for the
// counting algorithms, Burst+1 for GCRA, Limit+Burst for TokenBucket.
func (p *Policy) Capacity() int64 {
	switch p.Algorithm {
	case GCRA:
		return p.Burst + 1
	case TokenBucket:
		return p.Limit + p.Burst
	}
	return p.Limit
}

// Clone returns a copy that shares no map with p.
func (p Policy) Clone() Policy {
	if p.Overrides != nil {
		o := make(map[string]int64, len(p.Overrides))
		for k, v := range p.Overrides {
			o[k] = v
		}
		p.Overrides = o
	}
	return p
}

// policyJSON is the wire and file form of a Policy.
type policyJSON struct {
	Name        string           `json:"name"`
	Algorithm   Algorithm        `json:"algorithm"`
	Limit       int64            `json:"limit"`
	WindowMS    int64            `json:"window_ms"`
	Burst       int64            `json:"burst"`
	FailureMode FailureMode      `json:"failure_mode"`
	Shadow      bool             `json:"shadow"`
	Replication Replication      `json:"replication,omitempty"`
	Overrides   map[string]int64 `json:"overrides,omitempty"`
}

// MarshalJSON writes the policy with window_ms in milliseconds and the
// algorithm and failure mode by name.
func (p Policy) MarshalJSON() ([]byte, error) {
	return json.Marshal(policyJSON{
		Name: p.Name, Algorithm: p.Algorithm, Limit: p.Limit, WindowMS: p.Window.Milliseconds(),
		Burst: p.Burst, FailureMode: p.FailureMode, Shadow: p.Shadow, Replication: p.Replication, Overrides: p.Overrides,
	})
}

// UnmarshalJSON reads the form MarshalJSON writes. Unknown fields, fields
// named in another case ("Limit") and fields given twice are an error (a
// *FieldError), so a typo in a policy file does not pass silently. It does not
// validate; call Validate.
func (p *Policy) UnmarshalJSON(b []byte) error {
	if err := exactFields(b); err != nil {
		return err
	}
	var j policyJSON
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&j); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if j.WindowMS < 0 || j.WindowMS > MaxWindow.Milliseconds() {
		return &FieldError{Policy: j.Name, Field: "window_ms", Reason: fmt.Sprintf("must be between 1 and %d, got %d", MaxWindow.Milliseconds(), j.WindowMS)}
	}
	*p = Policy{
		Name: j.Name, Algorithm: j.Algorithm, Limit: j.Limit, Window: time.Duration(j.WindowMS) * time.Millisecond,
		Burst: j.Burst, FailureMode: j.FailureMode, Shadow: j.Shadow, Replication: j.Replication, Overrides: j.Overrides,
	}
	return nil
}

// policyFields are the names of policyJSON's fields.
var policyFields = [...]string{"name", "algorithm", "limit", "window_ms", "burst", "failure_mode", "shadow", "replication", "overrides"}

// exactFields refuses a policy object whose field names are not exactly
// policyFields, or that names one twice; encoding/json would match them
// in any case and keep the last of two. Anything but a well-formed object
// passes, for the decoder to word its error.
func exactFields(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var seen [len(policyFields)]bool
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := t.(string)
		i := 0
		for i < len(policyFields) && policyFields[i] != name {
			i++
		}
		if i == len(policyFields) {
			for _, f := range policyFields {
				if strings.EqualFold(f, name) {
					return &FieldError{Field: name, Reason: fmt.Sprintf("unknown field %q: field names are case-sensitive, want %q", name, f)}
				}
			}
			return &FieldError{Field: name, Reason: fmt.Sprintf("unknown field %q", name)}
		}
		if seen[i] {
			return &FieldError{Field: name, Reason: fmt.Sprintf("field %q given twice", name)}
		}
		seen[i] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}
