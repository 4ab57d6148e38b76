package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/vibewell/ratelimit/bucket"
)

// Target is what a run sends checks to: an in-process cluster, the HTTP
// check API of running nodes, or a store. Implementations are safe for
// concurrent use.
type Target interface {
	// Check applies hits to the counter of key under the named policy. Over
	// the limit is a Decision with Allowed == false and a nil error; an
	// error is a failure of the target (network, backend, bad request).
	Check(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error)
	// Close releases what the target holds (connections, nodes).
	Close(ctx context.Context) error
}

// BatchTarget is a Target that decides many checks in one call. Run uses it
// when Config.Batch is above 1, and falls back to Check in a loop for a
// Target without it.
type BatchTarget interface {
	Target
	// CheckBatch decides checks[i] into out[i], in order. out is at least as
	// long as checks. A returned error failed the whole batch; an error of
	// one check is in its Outcome.
	CheckBatch(ctx context.Context, checks []Check, out []Outcome) error
}

// Check is one check of a batch.
type Check struct {
	Policy string // the policy's name
	Key    string // the key checked under it
	Hits   int64  // hits to take; 0 peeks
}

// Outcome is the result of one check of a batch: a decision, or Err.
type Outcome struct {
	Decision bucket.Decision // the decision, when Err is nil
	Err      error           // why the check was not decided
}

// KindError is an error that names its kind for the report (e.g.
// "http_503"). Errors without it are classified by ErrorKind.
type KindError interface {
	error
	Kind() string
}

// kindError is an error with a kind for the report.
type kindError struct {
	kind string
	err  error
}

func (e *kindError) Error() string { return e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }
func (e *kindError) Kind() string  { return e.kind }

// ErrorKind classifies err for the report's error table: the kind of a
// KindError, else "timeout", "canceled", "conn_refused", "conn_reset",
// "eof", "net", or "other".
func ErrorKind(err error) string {
	var ke KindError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ke):
		return ke.Kind()
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "conn_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "conn_reset"
	case errors.Is(err, bucket.ErrBackend):
		return "backend"
	}
	var ne net.Error
	if errors.As(err, &ne) {
		if ne.Timeout() {
			return "timeout"
		}
		return "net"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "eof"
	}
	return "other"
}
