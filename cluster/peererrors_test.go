package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/vibewell/ratelimit/transport"
)

// TestPeerErrorKinds: each transport error, wrapped as the transports
// wrap them, lands in its kind.
func TestPeerErrorKinds(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("transport: 127.0.0.1:7947: check: %w", err) }
	for _, c := range []struct {
		err  error
		kind string
	}{
		{wrap(transport.ErrTimeout), peerErrTimeout},
		{wrap(fmt.Errorf("%w: %w", transport.ErrTimeout, context.DeadlineExceeded)), peerErrTimeout},
		{context.DeadlineExceeded, peerErrTimeout},
		{wrap(context.Canceled), peerErrCanceled},
		{wrap(transport.ErrUnreachable), peerErrUnreachable},
		{wrap(transport.ErrRemote), peerErrRemote},
		{wrap(transport.ErrBadFrame), peerErrProtocol},
		{wrap(transport.ErrVersion), peerErrProtocol},
		{wrap(transport.ErrFrameTooLarge), peerErrProtocol},
		{wrap(transport.ErrClosed), peerErrClosed},
		{errors.New("something else"), peerErrOther},
	} {
		if got := kindOf(c.err); got != c.kind {
			t.Errorf("kindOf(%v) = %q, want %q", c.err, got, c.kind)
		}
	}
	p := newPeerErrors()
	p.failed("check", wrap(transport.ErrUnreachable))
	p.failed("check", wrap(transport.ErrUnreachable))
	p.failed("counts", wrap(transport.ErrTimeout))
	if got := p.total(); got != 3 {
		t.Fatalf("total %d, want 3", got)
	}
	if got := p.count[[2]string{"check", peerErrUnreachable}]; got != 2 {
		t.Fatalf("check/unreachable %d, want 2", got)
	}
}
