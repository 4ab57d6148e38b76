package cluster_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
	"github.com/vibewell/ratelimit/transport"
)

// slowDials is a transport whose checks to one address fail, a set number
// of times, with the error of a dial that timed out: what a live owner on
// a starved machine gives a peer that has no connection to it yet.
type slowDials struct {
	transport.Transport
	to    atomic.Pointer[string]
	fails atomic.Int64
	err   error
}

func (s *slowDials) slow(addr string) bool {
	to := s.to.Load()
	return to != nil && *to == addr && s.fails.Add(-1) >= 0
}

func (s *slowDials) Check(ctx context.Context, addr string, item transport.CheckItem) (transport.CheckResult, error) {
	if s.slow(addr) {
		return transport.CheckResult{}, s.err
	}
	return s.Transport.Check(ctx, addr, item)
}

func (s *slowDials) CheckMany(ctx context.Context, addr string, items []transport.CheckItem, out []transport.CheckResult) error {
	if s.slow(addr) {
		return s.err
	}
	return s.Transport.CheckMany(ctx, addr, items, out)
}

// dialTimeoutErr returns the error the TCP transport gives a check whose
// dial timed out.
func dialTimeoutErr(t *testing.T) error {
	t.Helper()
	ln, err := transport.NewTCP(transport.TCPConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { _ = ln.Serve(nil) }()
	tcp, err := transport.NewTCP(transport.TCPConfig{Addr: "127.0.0.1:0", DialTimeout: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = tcp.Check(ctx, ln.Addr(), transport.CheckItem{Policy: "p", Key: "k", Hits: 1})
	if !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("a check whose dial timed out: %v, want ErrUnreachable", err)
	}
	return err
}

// TestSlowDialIsNotAFailover: a forward whose dial to the owner timed out
// (a live owner, slow on a starved machine) is asked again, not failed
// over: the owner still decides the key, so a successor deciding it on
// its copy meanwhile admits beyond the limit. A key's owner has one hit
// left; a check through another node whose first dials to the owner time
// out is allowed, and the owner's counter holds it: the owner denies the
// next check at once. (Before, the successor decided the check on its
// copy, and the owner allowed one more: 2 of 1.)
func TestSlowDialIsNotAFailover(t *testing.T) {
	slow := &slowDials{err: dialTimeoutErr(t)}
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly, InMemory: true, Configure: func(i int, cfg *cluster.Config) {
		if i == 2 {
			slow.Transport = cfg.Transport
			cfg.Transport = slow
		}
	}})
	const limit = 50
	var key string
	for i := 0; key == "" && i < 10_000; i++ {
		if k := "slow-" + strconv.Itoa(i); c.Owner("small", k) == 0 {
			key = k
		}
	}
	owner, via := c.Node(0), c.Node(2)
	for j := range limit - 1 {
		if d, err := owner.Allow(context.Background(), "small", key, 1); err != nil || !d.Allowed {
			t.Fatalf("check %d of %d: %+v, %v", j+1, limit-1, d, err)
		}
	}
	// The successor's copy holds the 49 hits.
	time.Sleep(500 * time.Millisecond)
	ownerAddr := c.Node(0).Addrs().Peer
	slow.fails.Store(3)
	slow.to.Store(&ownerAddr)
	d, err := via.Allow(context.Background(), "small", key, 1)
	if err != nil || !d.Allowed {
		t.Fatalf("the last hit, through %s whose dials to the owner time out: %+v, %v; want allowed", via.Name(), d, err)
	}
	if n := slow.fails.Load(); n >= 0 {
		t.Errorf("the check failed %d time(s) to reach the owner and was not sent to it again", 3-n)
	}
	if d, err := owner.Allow(context.Background(), "small", key, 1); err != nil || d.Allowed {
		t.Errorf("the owner's next check: %+v, %v; want denied (its counter holds the %d hits)", d, err, limit)
	}
}
