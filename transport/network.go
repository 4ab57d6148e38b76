package transport

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// NetworkCallTimeout bounds a request on a Network whose ctx has no
// deadline.
const NetworkCallTimeout = 2 * time.Second

// Network is an in-memory network of transports for tests: requests are
// handed to the target's Handler directly (no encoding), and the network
// can be partitioned and slowed. It is safe for concurrent use; the zero
// value is not usable, call NewNetwork.
//
// A request to an address that is partitioned away from the sender, has no
// transport, or whose transport is closed fails at once with
// ErrUnreachable. A request to a transport that has not called Serve yet
// waits for it (up to the ctx deadline or NetworkCallTimeout), as a TCP
// peer's connection would.
type Network struct {
	mu      sync.Mutex
	nodes   map[string]*memTransport
	blocked map[[2]string]bool // ordered pairs that cannot talk
	delays  map[string]time.Duration
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{
		nodes:   make(map[string]*memTransport),
		blocked: make(map[[2]string]bool),
		delays:  make(map[string]time.Duration),
	}
}

// Transport returns the transport at addr, creating it when addr has none
// or its transport was closed (a restart).
func (n *Network) Transport(addr string) Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if m, ok := n.nodes[addr]; ok && !m.isClosed() {
		return m
	}
	m := &memTransport{net: n, addr: addr, ready: make(chan struct{}), done: make(chan struct{})}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	n.nodes[addr] = m
	return m
}

// Partition cuts every address of a off from every address of b, both
// ways, until Heal. Requests across the cut fail at once with
// ErrUnreachable; requests already delivered are answered.
func (n *Network) Partition(a, b []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.blocked[[2]string{x, y}] = true
			n.blocked[[2]string{y, x}] = true
		}
	}
}

// Heal removes every partition.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.blocked)
}

// Delay makes every request to or from addr take d longer (a request
// between two delayed addresses takes both delays); d == 0 removes the
// delay. The wait honours the request's ctx.
func (n *Network) Delay(addr string, d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if d <= 0 {
		delete(n.delays, addr)
		return
	}
	n.delays[addr] = d
}

// route returns the transport at to as seen from from, and the delay of
// the trip.
func (n *Network) route(from, to string) (*memTransport, time.Duration, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.blocked[[2]string{from, to}] {
		return nil, 0, fmt.Errorf("transport: %s: %w: partitioned", to, ErrUnreachable)
	}
	m, ok := n.nodes[to]
	if !ok || m.isClosed() {
		return nil, 0, fmt.Errorf("transport: %s: %w: no transport", to, ErrUnreachable)
	}
	return m, n.delays[from] + n.delays[to], nil
}

var _ Transport = (*memTransport)(nil)

// memTransport is one address of a Network.
type memTransport struct {
	net    *Network
	addr   string
	ctx    context.Context // cancelled by Close; Handler calls run under it
	cancel context.CancelFunc
	ready  chan struct{} // closed by Serve
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	mu      sync.Mutex
	h       Handler
	serving bool
	closed  bool
}

func (m *memTransport) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// Addr returns the transport's address on the network.
func (m *memTransport) Addr() string { return m.addr }

// Serve serves requests with h until Close.
func (m *memTransport) Serve(h Handler) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	if m.serving {
		m.mu.Unlock()
		return errors.New("transport: Serve called twice")
	}
	m.serving, m.h = true, h
	close(m.ready)
	m.mu.Unlock()
	<-m.done
	return nil
}

// Close stops serving and waits for the Handler calls under way.
func (m *memTransport) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	return nil
}

// deliver runs fn on the target's handler in a goroutine of the target and
// waits for it within ctx.
func (m *memTransport) deliver(ctx context.Context, to string, fn func(context.Context, Handler)) error {
	if m.isClosed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return ctxError(ctx, to)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, NetworkCallTimeout)
		defer cancel()
	}
	target, delay, err := m.net.route(m.addr, to)
	if err != nil {
		return err
	}
	select {
	case <-target.ready:
	case <-target.done:
		return fmt.Errorf("transport: %s: %w: closed", to, ErrUnreachable)
	case <-m.done:
		return ErrClosed
	case <-ctx.Done():
		return ctxError(ctx, to)
	}
	if delay > 0 {
		tm := time.NewTimer(delay)
		select {
		case <-tm.C:
		case <-m.done:
			tm.Stop()
			return ErrClosed
		case <-ctx.Done():
			tm.Stop()
			return ctxError(ctx, to)
		}
		if ctx.Err() != nil { // both fired: the deadline came first
			return ctxError(ctx, to)
		}
		if _, _, err := m.net.route(m.addr, to); err != nil {
			return err // partitioned while in flight
		}
	}
	target.mu.Lock()
	if target.closed {
		target.mu.Unlock()
		return fmt.Errorf("transport: %s: %w: closed", to, ErrUnreachable)
	}
	h := target.h
	target.wg.Add(1)
	target.mu.Unlock()
	finished := make(chan struct{})
	go func() {
		defer target.wg.Done()
		defer close(finished)
		fn(WithPeerName(target.ctx, m.addr), h)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		return ctxError(ctx, to)
	}
}

// Check hands item to the target's Handler.
func (m *memTransport) Check(ctx context.Context, addr string, item CheckItem) (CheckResult, error) {
	var res [1]CheckResult
	ch := make(chan CheckResult, 1)
	err := m.deliver(ctx, addr, func(ctx context.Context, h Handler) {
		items := [1]CheckItem{item}
		var out [1]CheckResult
		h.HandleChecks(ctx, items[:], out[:])
		ch <- out[0]
	})
	if err != nil {
		return CheckResult{}, err
	}
	res[0] = <-ch
	return res[0], nil
}

// CheckMany hands a copy of items to the target's Handler.
func (m *memTransport) CheckMany(ctx context.Context, addr string, items []CheckItem, out []CheckResult) error {
	if len(out) < len(items) {
		return fmt.Errorf("transport: check many: %w: %d results for %d items", ErrBadRequest, len(out), len(items))
	}
	if len(items) == 0 {
		return nil
	}
	in := append([]CheckItem(nil), items...)
	ch := make(chan []CheckResult, 1)
	err := m.deliver(ctx, addr, func(ctx context.Context, h Handler) {
		res := make([]CheckResult, len(in))
		h.HandleChecks(ctx, in, res)
		ch <- res
	})
	if err != nil {
		return err
	}
	copy(out, <-ch)
	return nil
}

// Call hands a copy of body to the target's Handler.
func (m *memTransport) Call(ctx context.Context, addr string, method string, body []byte) ([]byte, error) {
	in := append([]byte(nil), body...)
	type answer struct {
		body []byte
		err  error
	}
	ch := make(chan answer, 1)
	err := m.deliver(ctx, addr, func(ctx context.Context, h Handler) {
		b, err := h.HandleCall(ctx, method, in)
		ch <- answer{append([]byte(nil), b...), err}
	})
	if err != nil {
		return nil, err
	}
	a := <-ch
	if a.err != nil {
		return nil, fmt.Errorf("transport: call %s to %s: %w", method, addr, &RemoteError{Message: a.err.Error()})
	}
	return a.body, nil
}
