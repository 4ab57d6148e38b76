package transport

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// Version is the protocol version carried in the header of every frame. A
// node answers a frame of another version with an error frame and closes
// the connection; see the package documentation for what may change
// without a new version.
const Version = 1

// Errors returned by transports. They are wrapped with context (the peer's
// address, the method) and are tested with errors.Is.
var (
	// ErrUnreachable means the peer could not be reached: the dial failed,
	// the connection broke before the answer came, the peer is in a
	// reconnect back-off, or (in a Network) it is partitioned away, has no
	// transport or is closed. A request that failed this way may or may not have been
	// decided by the peer.
	ErrUnreachable = errors.New("transport: peer unreachable")
	// ErrClosed means the local transport is closed.
	ErrClosed = errors.New("transport: closed")
	// ErrTimeout means no answer came before the deadline: the ctx deadline
	// (the error then also matches context.DeadlineExceeded) or, for a ctx
	// without one, the transport's default call timeout.
	ErrTimeout = errors.New("transport: timeout")
	// ErrFrameTooLarge means a frame would exceed the maximum frame size:
	// an item, batch or call body too large to send, or an incoming frame
	// header announcing more than the maximum (that connection is closed).
	ErrFrameTooLarge = errors.New("transport: frame too large")
	// ErrBadFrame means a frame could not be decoded: a protocol violation
	// by the peer. The connection it came on is closed.
	ErrBadFrame = errors.New("transport: malformed frame")
	// ErrVersion means the peer speaks another protocol version.
	ErrVersion = errors.New("transport: protocol version mismatch")
	// ErrRemote means the peer's Handler returned an error from HandleCall,
	// or refused the request; the error text carries the peer's message.
	ErrRemote = errors.New("transport: remote error")
	// ErrBadRequest means the arguments of a call were invalid (e.g. an
	// out slice shorter than the items of CheckMany).
	ErrBadRequest = errors.New("transport: bad request")
)

// Status is the outcome class of one check decided by a peer. It is a
// uint8 on the wire; values are never renumbered within a Version.
type Status uint8

// Statuses of a CheckResult.
const (
	// StatusOK means the check was decided; Allowed says how.
	StatusOK Status = iota
	// StatusUnknownPolicy means the peer does not know the policy.
	StatusUnknownPolicy
	// StatusBadRequest means the peer rejected the key or the hits.
	StatusBadRequest
	// StatusUnavailable means the peer could not decide (its store failed,
	// it is shutting down); the caller applies the policy's failure mode.
	StatusUnavailable
	// StatusNotOwner means the peer does not own the key (its ring differs
	// from the caller's); the caller may re-route or decide locally.
	StatusNotOwner
)

var statusNames = [...]string{"ok", "unknown_policy", "bad_request", "unavailable", "not_owner"}

// String returns the status's lower-case name, or "status(N)" for a value
// this version does not know.
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// CheckItem is one check sent to the owner of its key. It is a wire struct,
// separate from the domain types; on the wire it is the msgpack array
// [policy, key, hits].
type CheckItem struct {
	// Policy is the policy's name.
	Policy string
	// Key is the limited key under the policy.
	Key string
	// Hits is the number of hits to take (0 peeks).
	Hits int64
}

// CheckResult is the owner's answer to one CheckItem. On the wire it is the
// msgpack array [status, allowed, limit, remaining, reset_after_ns,
// retry_after_ns].
type CheckResult struct {
	// Status says whether the check was decided; the other fields are
	// meaningful only when it is StatusOK.
	Status Status
	// Allowed is false when the check is over the limit.
	Allowed bool
	// Limit is the capacity Remaining counts down from.
	Limit int64
	// Remaining is how many more hits would be allowed now.
	Remaining int64
	// ResetAfter is the time until the counter is back to full capacity.
	ResetAfter time.Duration
	// RetryAfter is the time until the same check would pass; 0 when
	// Allowed.
	RetryAfter time.Duration
}

// Handler serves the requests that reach a transport. Its methods are
// called concurrently, from several goroutines at once.
type Handler interface {
	// HandleChecks decides items[i] into results[i], in order; len(results)
	// == len(items). It is called with whole batches from the transport's
	// connection workers and must not block for long: a slow HandleChecks
	// holds one worker of the connection (others go on serving). items and
	// results are reused after it returns: a Handler must not keep the
	// slices. The keys of one batch share one allocation: a Handler that
	// keeps a key beyond the call (as a map key, say) should keep a copy
	// (strings.Clone), or it pins the whole batch in memory.
	HandleChecks(ctx context.Context, items []CheckItem, results []CheckResult)
	// HandleCall serves a request off the check path (counter hand-off,
	// policy writes): a method name and a msgpack body, answered by a body
	// or an error, whose text reaches the caller inside ErrRemote. It runs
	// in its own goroutine and may block; ctx is cancelled when the
	// transport closes.
	HandleCall(ctx context.Context, method string, body []byte) ([]byte, error)
}

// Transport sends checks and calls to peers and serves those of peers.
// Implementations are safe for concurrent use.
type Transport interface {
	// Check sends one check to the peer at addr and waits for its result.
	// Concurrent checks to one peer are batched under the hood. The error
	// reports a transport failure only (ErrUnreachable, ErrTimeout, ErrClosed,
	// ctx.Err()); a refused check is a result with a Status other than OK.
	Check(ctx context.Context, addr string, item CheckItem) (CheckResult, error)
	// CheckMany sends the caller's own batch to the peer at addr in one trip
	// and decides items[i] into out[i]. len(out) must be at least
	// len(items). An error applies to the whole batch.
	CheckMany(ctx context.Context, addr string, items []CheckItem, out []CheckResult) error
	// Call sends a request off the check path to the peer at addr and waits
	// for its answer. A Handler error comes back as an error matching
	// ErrRemote.
	Call(ctx context.Context, addr string, method string, body []byte) ([]byte, error)
	// Serve serves incoming requests with h and blocks until Close, after
	// which it returns nil. It may be called once.
	Serve(h Handler) error
	// Addr returns the address peers dial to reach this transport.
	Addr() string
	// Close stops serving, closes every connection, fails the requests in
	// flight with ErrClosed and waits for the transport's goroutines.
	Close() error
}
