package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vibewell/ratelimit/internal/msgpackenc"
)

// States of a slot or request: the waiter and the completer race to move
// it out of waiting; whoever loses leaves it to the other, and the last one
// to hold it returns it to its pool.
const (
	stWaiting int32 = iota
	stDone
	stAbandoned
)

// slot is one Check waiting in a peer's queue or in a gathered batch.
type slot struct {
	item     CheckItem
	size     int
	deadline int64 // unix ns of the caller's ctx deadline; 0 if none
	res      CheckResult
	err      error
	state    atomic.Int32
	done     chan struct{} // capacity 1
}

// Kinds of request.
const (
	kindGathered = iota // a batch of queued Checks
	kindMany            // one chunk of a CheckMany
	kindCall            // a Call
)

// request is one frame in flight on a client connection.
type request struct {
	kind     int
	slots    []*slot       // kindGathered
	items    []CheckItem   // kindMany, read while sending only
	out      []CheckResult // kindMany: where the results go
	method   string        // kindCall
	body     []byte        // kindCall, read while sending only
	resp     []byte        // kindCall answer
	err      error
	deadline int64 // unix ns; the sweeper fails the request after it
	state    atomic.Int32
	done     chan struct{} // capacity 1; kindMany and kindCall
}

func (t *TCP) getSlot() *slot { return t.slots.Get().(*slot) }

func (t *TCP) putSlot(s *slot) {
	s.item, s.res, s.err = CheckItem{}, CheckResult{}, nil
	s.state.Store(stWaiting)
	t.slots.Put(s)
}

func (t *TCP) getReq(kind int) *request {
	r := t.reqs.Get().(*request)
	r.kind = kind
	return r
}

func (t *TCP) putReq(r *request) {
	clear(r.slots)
	r.slots = r.slots[:0]
	r.items, r.out, r.method, r.body, r.resp, r.err = nil, nil, "", nil, nil, nil
	r.deadline = 0
	r.state.Store(stWaiting)
	t.reqs.Put(r)
}

// peer is the client side of the connections to one address: the queue
// of checks waiting to be batched, the batches in flight, the connections
// and the reconnect back-off.
type peer struct {
	t    *TCP
	addr string
	kick chan struct{} // wakes the flusher; capacity 1

	done chan struct{} // closed when the peer is retired

	mu         sync.Mutex
	closed     bool
	retired    bool  // idle and removed from the transport's map
	idleSince  int64 // unix ns when the sweeper first saw it idle; 0 if in use
	queue      []*slot
	queueBytes int
	inflight   int             // gathered batches in flight
	conns      []*clientConn   // ConnsPerPeer entries; nil when not connected
	dialing    []chan struct{} // closed when the dial of that entry ends
	live       int
	rr         int
	failures   int // consecutive failed dials
	retryAt    time.Time
	lastErr    error
}

// peer returns the peer of addr, creating it (and its flusher) on first use.
// The lookup of a known peer takes no lock (t.peerIndex mirrors t.peers): every
// Check makes one, and a shared mutex there was contended. A peer found
// while the transport closes is closed itself before Close returns, and
// refuses requests from then on.
func (t *TCP) peer(addr string) (*peer, error) {
	if v, ok := t.peerIndex.Load(addr); ok {
		return v.(*peer), nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if p, ok := t.peers[addr]; ok {
		return p, nil
	}
	n := t.cfg.ConnsPerPeer
	p := &peer{
		t:       t,
		addr:    addr,
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		conns:   make([]*clientConn, n),
		dialing: make([]chan struct{}, n),
	}
	t.peers[addr] = p
	t.peerIndex.Store(addr, p)
	t.wg.Add(1)
	go p.flusher()
	return p, nil
}

// Check sends item to the peer at addr as part of the next batch to it. The
// batch goes out at once when fewer than MaxInFlight batches to the peer are
// in flight; otherwise the check waits for one of them to return (or for
// the batch to fill up) and leaves with every check gathered meanwhile.
func (t *TCP) Check(ctx context.Context, addr string, item CheckItem) (CheckResult, error) {
	if err := ctx.Err(); err != nil {
		return CheckResult{}, ctxError(ctx, addr)
	}
	size := itemSize(&item)
	if size+headerLen+5 > t.cfg.MaxFrame {
		return CheckResult{}, fmt.Errorf("transport: check to %s: %w", addr, ErrFrameTooLarge)
	}
	s := t.getSlot()
	s.item, s.size, s.deadline = item, size, deadlineOf(ctx)
	var p *peer
	for {
		var err error
		if p, err = t.peer(addr); err != nil {
			t.putSlot(s)
			return CheckResult{}, err
		}
		p.mu.Lock()
		err = p.usable()
		if err == nil {
			break
		}
		p.mu.Unlock()
		if err != errRetired {
			t.putSlot(s)
			return CheckResult{}, err
		}
	}
	p.queue = append(p.queue, s)
	p.queueBytes += size
	c, r := p.next(true) // unlocks p.mu
	if r != nil {
		c.send(r)
	}

	if done := ctx.Done(); done == nil {
		// A ctx that cannot end: a plain receive is much cheaper than a
		// select, for the caller and for the reader that wakes it.
		<-s.done
	} else {
		select {
		case <-s.done:
		case <-done:
			if s.state.CompareAndSwap(stWaiting, stAbandoned) {
				return CheckResult{}, ctxError(ctx, addr)
			}
			<-s.done
		}
	}
	res, err := s.res, s.err
	t.putSlot(s)
	return res, err
}

// errRetired makes a caller look its peer up again.
var errRetired = errors.New("transport: peer retired")

// usable reports why the peer cannot take requests now: the transport is
// closed, the peer retired, or in a reconnect back-off. Called with p.mu
// held; it marks the peer in use.
func (p *peer) usable() error {
	p.idleSince = 0
	if p.retired {
		return errRetired
	}
	if p.closed {
		return ErrClosed
	}
	if p.live == 0 && p.failures > 0 && time.Now().Before(p.retryAt) {
		return fmt.Errorf("transport: %s: %w (reconnect back-off: %w)", p.addr, ErrUnreachable, p.lastErr)
	}
	return nil
}

// CheckMany sends items to the peer at addr as the caller's own batch, in
// frames of at most MaxBatch items sent back to back, and waits for all.
func (t *TCP) CheckMany(ctx context.Context, addr string, items []CheckItem, out []CheckResult) error {
	if len(out) < len(items) {
		return fmt.Errorf("transport: check many: %w: %d results for %d items", ErrBadRequest, len(out), len(items))
	}
	if len(items) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return ctxError(ctx, addr)
	}
	c, err := t.connect(ctx, addr)
	if err != nil {
		return err
	}
	var one [1]*request
	reqs := one[:0]
	var sendErr error
	for start := 0; start < len(items); {
		end, size := start, headerLen+5
		for end < len(items) && end-start < t.cfg.MaxBatch {
			s := itemSize(&items[end])
			if size+s > t.cfg.MaxFrame {
				break
			}
			size += s
			end++
		}
		if end == start {
			sendErr = fmt.Errorf("transport: check to %s: %w", addr, ErrFrameTooLarge)
			break
		}
		r := t.getReq(kindMany)
		r.items, r.out, r.deadline = items[start:end], out[start:end], deadlineOf(ctx)
		c.send(r)
		reqs = append(reqs, r)
		start = end
	}
	err = sendErr
	for _, r := range reqs {
		if err != nil { // give up on the rest
			if !r.state.CompareAndSwap(stWaiting, stAbandoned) {
				<-r.done
				t.putReq(r)
			}
			continue
		}
		err = t.wait(ctx, addr, r)
	}
	return err
}

// Call sends a request off the check path and waits for the answer.
func (t *TCP) Call(ctx context.Context, addr string, method string, body []byte) ([]byte, error) {
	if headerLen+16+len(method)+len(body) > t.cfg.MaxFrame {
		return nil, fmt.Errorf("transport: call %s to %s: %w", method, addr, ErrFrameTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxError(ctx, addr)
	}
	c, err := t.connect(ctx, addr)
	if err != nil {
		return nil, err
	}
	r := t.getReq(kindCall)
	r.method, r.body, r.deadline = method, body, deadlineOf(ctx)
	c.send(r)
	var resp []byte
	select {
	case <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(stWaiting, stAbandoned) {
			return nil, ctxError(ctx, addr)
		}
		<-r.done
	}
	resp, err = r.resp, r.err
	if err != nil {
		err = fmt.Errorf("transport: call %s to %s: %w", method, addr, err)
	}
	t.putReq(r)
	return resp, err
}

// connect returns a live connection to addr, dialing if needed.
func (t *TCP) connect(ctx context.Context, addr string) (*clientConn, error) {
	for {
		p, err := t.peer(addr)
		if err != nil {
			return nil, err
		}
		c, err := p.connect(ctx)
		if err != errRetired {
			return c, err
		}
	}
}

// wait waits for a kindMany request and recycles it.
func (t *TCP) wait(ctx context.Context, addr string, r *request) error {
	select {
	case <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(stWaiting, stAbandoned) {
			return ctxError(ctx, addr)
		}
		<-r.done
	}
	err := r.err
	t.putReq(r)
	return err
}

// deadlineOf returns ctx's deadline in unix ns, or 0.
func deadlineOf(ctx context.Context) int64 {
	if d, ok := ctx.Deadline(); ok {
		return d.UnixNano()
	}
	return 0
}

// ctxError is the error of a request whose ctx ended: a deadline is also
// ErrTimeout.
func ctxError(ctx context.Context, addr string) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("transport: %s: %w (%w)", addr, ErrTimeout, err)
	}
	return fmt.Errorf("transport: %s: %w", addr, err)
}

// pump sends the queued checks while the batching rule allows: fewer than
// MaxInFlight batches in flight, or a full batch waiting. Inline (a
// caller's goroutine) it never dials: it leaves that to the flusher, so a
// caller's deadline is not held up by a dial.
func (p *peer) pump(inline bool) {
	for {
		p.mu.Lock()
		c, r := p.next(inline)
		if r == nil {
			return
		}
		c.send(r)
		if inline {
			return
		}
	}
}

// next takes the next batch to send, if the batching rule allows one now,
// and the connection to send it on. It is called with p.mu held and
// releases it.
func (p *peer) next(inline bool) (*clientConn, *request) {
	cfg := &p.t.cfg
	full := len(p.queue) >= cfg.MaxBatch || p.queueBytes+headerLen+5 >= cfg.MaxFrame
	if p.closed || len(p.queue) == 0 || (p.inflight >= cfg.MaxInFlight && !full) {
		p.mu.Unlock()
		return nil, nil
	}
	c := p.pick()
	if c == nil {
		p.mu.Unlock()
		p.wake() // the flusher dials
		return nil, nil
	}
	if inline && p.wantDial() {
		p.wake() // a connection entry is missing: the flusher dials it
	}
	r := p.take()
	if r != nil {
		p.inflight++
	}
	p.mu.Unlock()
	return c, r
}

func (p *peer) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// wantDial reports whether a connection entry is missing, no dial is under
// way for it, and the peer is not in back-off. Called with p.mu held.
func (p *peer) wantDial() bool {
	if p.live == len(p.conns) {
		return false
	}
	missing := 0
	for i, c := range p.conns {
		if c == nil && p.dialing[i] == nil {
			missing++
		}
	}
	return missing > 0 && (p.failures == 0 || !time.Now().Before(p.retryAt))
}

// pick returns a live connection, round-robin. Called with p.mu held.
func (p *peer) pick() *clientConn {
	n := len(p.conns)
	for i := 0; i < n; i++ {
		p.rr++
		if c := p.conns[p.rr%n]; c != nil {
			return c
		}
	}
	return nil
}

// take moves up to one batch of checks from the queue into a request,
// dropping abandoned ones. Called with p.mu held.
func (p *peer) take() *request {
	cfg := &p.t.cfg
	r := p.t.getReq(kindGathered)
	budget := cfg.MaxFrame - headerLen - 5
	k := 0
	for ; k < len(p.queue) && len(r.slots) < cfg.MaxBatch; k++ {
		s := p.queue[k]
		if s.size > budget {
			break
		}
		p.queueBytes -= s.size
		if s.state.Load() == stAbandoned {
			p.t.putSlot(s)
			continue
		}
		budget -= s.size
		r.deadline = max(r.deadline, s.deadline)
		r.slots = append(r.slots, s)
	}
	n := copy(p.queue, p.queue[k:])
	clear(p.queue[n:])
	p.queue = p.queue[:n]
	if len(r.slots) == 0 {
		p.t.putReq(r)
		return nil
	}
	return r
}

// flusher dials for the peer (callers never dial for a Check, so a slow
// dial cannot outlast their deadlines) and sends the queue once connected.
// Batches gathered behind one in flight are sent by whoever completes that
// one, usually the connection's reader.
func (p *peer) flusher() {
	defer p.t.wg.Done()
	for {
		select {
		case <-p.t.ctx.Done():
			return
		case <-p.done:
			return
		case <-p.kick:
		}
		p.mu.Lock()
		missing := p.live == 0 || p.wantDial()
		queued := len(p.queue) > 0
		p.mu.Unlock()
		if missing {
			if _, err := p.connect(p.t.ctx); err != nil && queued {
				p.failQueue(err)
				continue
			}
		}
		p.pump(false)
	}
}

// connect returns a live connection, dialing one when none is (or when a
// connection entry is missing and no dial is under way). It fails at once
// during a reconnect back-off.
func (p *peer) connect(ctx context.Context) (*clientConn, error) {
	for {
		p.mu.Lock()
		p.idleSince = 0
		if p.retired {
			p.mu.Unlock()
			return nil, errRetired
		}
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		i := -1
		for j, c := range p.conns {
			if c == nil && p.dialing[j] == nil {
				i = j
				break
			}
		}
		if c := p.pick(); c != nil && (i < 0 || !p.wantDial()) {
			p.mu.Unlock()
			return c, nil
		}
		if i < 0 { // every missing entry is being dialed: wait for one
			var ch chan struct{}
			for _, d := range p.dialing {
				if d != nil {
					ch = d
					break
				}
			}
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctxError(ctx, p.addr)
			}
		}
		if err := p.usable(); err != nil {
			c := p.pick()
			p.mu.Unlock()
			if c != nil {
				return c, nil
			}
			return nil, err
		}
		ch := make(chan struct{})
		p.dialing[i] = ch
		p.mu.Unlock()
		// The dial (a TLS handshake included) runs to its end even if
		// this caller gives up: on a starved machine a handshake may
		// outlast a short request deadline, and the next request then
		// finds the connection made instead of starting over.
		var err error
		p.t.wg.Add(1)
		go p.dial(i, ch, &err)
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctxError(ctx, p.addr)
		}
		if err != nil {
			p.mu.Lock()
			c := p.pick()
			p.mu.Unlock()
			if c != nil {
				return c, nil
			}
			return nil, fmt.Errorf("transport: dial %s: %w: %w", p.addr, ErrUnreachable, err)
		}
		// The loop picks the new connection up.
	}
}

// dial opens connection i, bounded by DialTimeout and Close, installs it
// (or records the failure in *errp and starts the back-off) and closes ch.
func (p *peer) dial(i int, ch chan struct{}, errp *error) {
	defer p.t.wg.Done()
	nc, err := p.t.dial(p.t.ctx, p.addr)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dialing[i] = nil
	defer close(ch)
	if err != nil {
		*errp = err
		p.failures++
		p.retryAt = time.Now().Add(p.t.backoff(p.failures))
		p.lastErr = err
		p.t.log.warn("transport: dial", "peer", p.addr, "err", err)
		return
	}
	if p.closed || p.retired {
		nc.Close()
		return
	}
	c := &clientConn{
		p:       p,
		nc:      nc,
		idx:     i,
		w:       frameWriter{nc: nc, timeout: p.t.cfg.CallTimeout},
		pending: make(map[uint32]*request),
	}
	p.conns[i] = c
	p.live++
	p.failures = 0
	p.t.wg.Add(1)
	go c.read()
}

// failQueue fails every queued check with err.
func (p *peer) failQueue(err error) {
	p.mu.Lock()
	q := p.queue
	p.queue, p.queueBytes = nil, 0
	p.mu.Unlock()
	for _, s := range q {
		p.t.deliver(s, nil, err)
	}
}

// deliver completes one check with a result or an error.
func (t *TCP) deliver(s *slot, res *CheckResult, err error) {
	if !s.state.CompareAndSwap(stWaiting, stDone) {
		t.putSlot(s) // the caller left
		return
	}
	if res != nil {
		s.res = *res
	}
	s.err = err
	s.done <- struct{}{}
}

// finish completes a request with results (check answers), a call answer,
// or an error.
func (p *peer) finish(r *request, results []CheckResult, resp []byte, err error) {
	t := p.t
	if r.kind == kindGathered {
		for i, s := range r.slots {
			if err != nil {
				t.deliver(s, nil, err)
			} else {
				t.deliver(s, &results[i], nil)
			}
		}
		t.putReq(r)
		// Send what gathered meanwhile from here (usually the connection's
		// reader): a hand-off to the flusher would cost a wake-up per
		// batch. A write that blocks holds this reader at most
		// CallTimeout, the write deadline.
		p.mu.Lock()
		p.inflight--
		if c, next := p.next(true); next != nil { // unlocks p.mu
			c.send(next)
		}
		return
	}
	if !r.state.CompareAndSwap(stWaiting, stDone) {
		t.putReq(r) // the caller left
		return
	}
	if err == nil {
		if r.kind == kindMany {
			copy(r.out, results)
		} else if resp != nil {
			r.resp = append([]byte(nil), resp...)
		}
	}
	r.err = err
	r.done <- struct{}{}
}

// expire fails the requests whose deadline passed before now (unix ns),
// and reports whether others are still pending.
func (p *peer) expire(now int64) (pending bool) {
	p.mu.Lock()
	conns := append([]*clientConn(nil), p.conns...)
	p.mu.Unlock()
	for _, c := range conns {
		if c == nil {
			continue
		}
		var late []*request
		c.mu.Lock()
		for id, r := range c.pending {
			if r.deadline < now {
				late = append(late, r)
				delete(c.pending, id)
			}
		}
		pending = pending || len(c.pending) > 0
		c.mu.Unlock()
		for _, r := range late {
			p.t.st.timeouts.Add(1)
			p.finish(r, nil, nil, fmt.Errorf("transport: %s: %w (no answer within %v)", p.addr, ErrTimeout, p.t.cfg.CallTimeout))
		}
	}
	return pending
}

// idle reports whether the peer has nothing to do: no connection, queue,
// batch in flight or dial. Called with p.mu held.
func (p *peer) idle() bool {
	if p.closed || p.retired || p.live > 0 || len(p.queue) > 0 || p.inflight > 0 {
		return false
	}
	for _, d := range p.dialing {
		if d != nil {
			return false
		}
	}
	return true
}

// maybeRetire removes the peer from the transport once it has been idle
// (typically: a node that left, whose connection is gone) for longer than
// the transport's peerIdle, so addresses that come and go do not pile up.
func (p *peer) maybeRetire(now int64) {
	p.mu.Lock()
	switch {
	case !p.idle():
		p.idleSince = 0
		p.mu.Unlock()
		return
	case p.idleSince == 0:
		p.idleSince = now
		p.mu.Unlock()
		return
	case now-p.idleSince < int64(p.t.cfg.peerIdle):
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	t := p.t
	t.mu.Lock()
	defer t.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.idle() || p.idleSince == 0 || t.peers[p.addr] != p {
		return // used meanwhile
	}
	p.retired = true
	close(p.done)
	delete(t.peers, p.addr)
	t.peerIndex.Delete(p.addr)
}

// close fails everything queued and in flight with ErrClosed.
func (p *peer) close() {
	p.mu.Lock()
	p.closed = true
	conns := append([]*clientConn(nil), p.conns...)
	p.mu.Unlock()
	for _, c := range conns {
		if c != nil {
			c.fail(ErrClosed)
		}
	}
	p.failQueue(ErrClosed)
}

// clientConn is one outgoing connection: requests are written by the
// goroutines that send them, answers are read by one reader goroutine and
// matched to their requests by id.
type clientConn struct {
	p      *peer
	nc     net.Conn
	idx    int
	w      frameWriter
	nextID atomic.Uint32

	mu      sync.Mutex
	dead    bool
	pending map[uint32]*request

	results []CheckResult // reader's scratch
	buf     []byte        // reader's scratch for large frames
}

// send encodes r, registers it and writes it. The frame is encoded and
// registered under the writer's lock, so an answer can never precede the
// registration; after the write r may already be finished and recycled.
func (c *clientConn) send(r *request) {
	t := c.p.t
	id := c.nextID.Add(1)
	buf := c.w.begin()
	start := len(buf)
	var items int
	switch r.kind {
	case kindGathered:
		buf = appendHeader(buf, frameCheck, id)
		buf = msgpackenc.AppendArrayLen(buf, len(r.slots))
		for _, s := range r.slots {
			buf = appendItem(buf, &s.item)
		}
		items = len(r.slots)
	case kindMany:
		buf = appendHeader(buf, frameCheck, id)
		buf = appendCheckBatch(buf, r.items)
		items = len(r.items)
	default:
		buf = appendHeader(buf, frameCall, id)
		buf = append(buf, 0x92)
		buf = msgpackenc.AppendString(buf, r.method)
		buf = msgpackenc.AppendBytes(buf, r.body)
	}
	var failErr error
	if !finishFrame(buf, start, t.cfg.MaxFrame) {
		buf = buf[:start]
		failErr = fmt.Errorf("transport: %s: %w", c.p.addr, ErrFrameTooLarge)
	} else {
		c.mu.Lock()
		if c.dead {
			buf = buf[:start]
			failErr = fmt.Errorf("transport: %s: %w: connection closed", c.p.addr, ErrUnreachable)
		} else {
			// The sweeper ends the request at the latest of its callers'
			// deadlines, or after CallTimeout if that is later.
			r.deadline = max(r.deadline, time.Now().Add(t.cfg.CallTimeout).UnixNano())
			c.pending[id] = r
		}
		c.mu.Unlock()
		if failErr == nil {
			t.wakeSweep()
		}
	}
	if failErr == nil {
		if items > 0 {
			t.st.checkFrames.Add(1)
			t.st.checksSent.Add(uint64(items))
		} else {
			t.st.callsSent.Add(1)
		}
	}
	err := c.w.end(buf)
	if failErr != nil {
		c.p.finish(r, nil, nil, failErr)
	}
	if err != nil {
		c.fail(err)
	}
}

// read reads answers until the connection fails.
func (c *clientConn) read() {
	defer c.p.t.wg.Done()
	t := c.p.t
	br := bufio.NewReaderSize(c.nc, readBufSize)
	for {
		h, body, err := readFrame(br, &c.buf, t.cfg.MaxFrame, nil)
		if err != nil {
			if errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrBadFrame) {
				t.st.badFrames.Add(1)
			}
			c.fail(err)
			return
		}
		if h.version != Version {
			t.st.badFrames.Add(1)
			c.fail(ErrVersion)
			return
		}
		c.mu.Lock()
		r := c.pending[h.id]
		delete(c.pending, h.id)
		c.mu.Unlock()
		if err := c.answer(h, body, r); err != nil {
			t.st.badFrames.Add(1)
			c.fail(err) // first, so that no new request picks this connection
			if r != nil {
				c.p.finish(r, nil, nil, fmt.Errorf("transport: %s: %w", c.p.addr, err))
			}
			return
		}
	}
}

// answer completes r (nil when it timed out) with the frame h. An error
// means the frame broke the protocol.
func (c *clientConn) answer(h header, body []byte, r *request) error {
	switch h.typ {
	case frameCheckResp:
		res, err := decodeResultBatch(body, c.results[:0])
		c.results = res
		if err != nil || r == nil {
			return err
		}
		want := len(r.slots)
		if r.kind == kindMany {
			want = len(r.out)
		}
		if r.kind == kindCall || len(res) != want {
			return ErrBadFrame
		}
		c.p.finish(r, res, nil, nil)
	case frameCallResp:
		msg, resp, err := decodePair(body)
		if err != nil || r == nil {
			return err
		}
		if r.kind != kindCall {
			return ErrBadFrame
		}
		if msg != nil {
			c.p.finish(r, nil, nil, &RemoteError{Message: string(msg)})
		} else {
			c.p.finish(r, nil, resp, nil)
		}
	case frameError:
		code, msg, err := decodeErrorBody(body)
		if err != nil {
			return err
		}
		if r == nil {
			return nil
		}
		var rerr error = &RemoteError{Message: msg}
		if code == codeVersion {
			rerr = fmt.Errorf("%w: %s", ErrVersion, msg)
		}
		c.p.finish(r, nil, nil, fmt.Errorf("transport: %s: %w", c.p.addr, rerr))
	default:
		return ErrBadFrame
	}
	return nil
}

// fail closes the connection and fails its requests in flight. Requests
// fail with ErrClosed when the transport is closing, else ErrUnreachable.
func (c *clientConn) fail(cause error) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	c.nc.Close()

	p := c.p
	p.mu.Lock()
	if p.conns[c.idx] == c {
		p.conns[c.idx] = nil
		p.live--
	}
	closed := p.closed
	more := len(p.queue) > 0
	p.mu.Unlock()

	err := error(ErrClosed)
	if !closed {
		err = fmt.Errorf("transport: %s: %w: %w", p.addr, ErrUnreachable, cause)
		p.t.log.warn("transport: connection lost", "peer", p.addr, "err", cause)
	}
	for _, r := range pending {
		p.finish(r, nil, nil, err)
	}
	if more && !closed {
		p.wake()
	}
}

// RemoteError is the error a peer's Handler returned from HandleCall, or
// the reason it refused a request. It matches ErrRemote.
type RemoteError struct {
	// Message is the peer's error text.
	Message string
}

// Error returns the peer's message.
func (e *RemoteError) Error() string { return "transport: remote error: " + e.Message }

// Is reports whether target is ErrRemote.
func (e *RemoteError) Is(target error) bool { return target == ErrRemote }
