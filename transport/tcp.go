package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// TCPConfig configures a TCP transport. Every zero field takes the default
// in its comment.
type TCPConfig struct {
	// Addr is the address to listen on. Default: "127.0.0.1:0" (a free
	// loopback port; tests use it).
	Addr string
	// Advertise is the address peers dial, returned by Addr. Default: the
	// listener's address (with the real port when Addr has port 0). Set it
	// when listening on 0.0.0.0.
	Advertise string
	// TLS, when set, makes every connection TLS: the listener serves with
	// it, and dials use it as the client configuration (ServerName defaults
	// to the dialed host). For mutual authentication set Certificates,
	// RootCAs, ClientCAs and ClientAuth: tls.RequireAndVerifyClientCert.
	// Default: plain TCP.
	TLS *tls.Config
	// MaxFrame bounds the size of one frame, header included, on read and
	// on write. Default: 4 MiB.
	MaxFrame int
	// MaxBatch bounds the checks of one outgoing batch. Default: 256.
	MaxBatch int
	// MaxInFlight is how many gathered batches may be in flight to one peer
	// before new checks wait for one to return (a full batch goes out
	// regardless). Default: 1, which gave the largest batches and the most
	// decisions/s on a 2-core machine (docs/benchmarks-transport.md); a
	// larger value lets checks overtake a slow batch, at the cost of
	// smaller batches under load.
	MaxInFlight int
	// ConnsPerPeer is how many connections are kept to each peer; requests
	// are spread over them. Default: 1.
	ConnsPerPeer int
	// Workers bounds the goroutines that run HandleChecks for one incoming
	// connection; they start on demand. Default: 8.
	Workers int
	// DialTimeout bounds one dial, TLS handshake included. Default: 1s.
	DialTimeout time.Duration
	// CallTimeout bounds the wait for an answer when the ctx has no
	// deadline (or an earlier one: a request is abandoned at its ctx
	// deadline, and its frame forgotten at the later of the two), and each
	// socket write. Default: 2s.
	CallTimeout time.Duration
	// BackoffMin is the wait after the first failed dial to a peer, during
	// which requests to it fail at once with ErrUnreachable; it doubles
	// with each failure up to BackoffMax. Default: 10ms.
	BackoffMin time.Duration
	// BackoffMax caps the back-off. Default: 1s.
	BackoffMax time.Duration
	// Rand returns a number in [0, 1) that jitters each back-off between
	// half and all of its length. Default: nil, no jitter.
	Rand func() float64
	// Logger receives connection errors, at most one line a second (the
	// rest are counted in the next line). Default: discard.
	Logger *slog.Logger

	// The limits below bound what one incoming connection can take, so
	// that neither a stranger nor a faulty peer can exhaust the node; each
	// time one trips it is counted in Stats.

	// MaxConns bounds the incoming connections served at once; a
	// connection beyond it is closed at accept (Stats.ConnsRefused).
	// Default: 256, far above a cluster's needs (ConnsPerPeer per peer).
	MaxConns int
	// MaxCallsPerConn bounds the calls of one incoming connection served
	// at once; past it the connection's reader waits for one to finish
	// (Stats.CallsThrottled), which pushes back on the peer. Default: 64.
	MaxCallsPerConn int
	// ReadTimeout bounds the arrival of a frame once its first bytes came,
	// and of a TLS handshake; past it the connection is closed
	// (Stats.ReadTimeouts). Default: 5s.
	ReadTimeout time.Duration
	// IdleTimeout closes an incoming connection that brings no frame for
	// this long (Stats.IdleClosed); peers redial on their next request.
	// Default: 5 minutes.
	IdleTimeout time.Duration

	peerIdle time.Duration // tests shorten it; default peerIdleTimeout
}

// Defaults of TCPConfig.
const (
	DefaultMaxFrame     = 4 << 20
	DefaultMaxBatch     = 256
	DefaultMaxInFlight  = 1
	DefaultConnsPerPeer = 1
	DefaultWorkers      = 8
	DefaultDialTimeout  = time.Second
	DefaultCallTimeout  = 2 * time.Second
	DefaultBackoffMin   = 10 * time.Millisecond
	DefaultBackoffMax   = time.Second

	DefaultMaxConns        = 256
	DefaultMaxCallsPerConn = 64
	DefaultReadTimeout     = 5 * time.Second
	DefaultIdleTimeout     = 5 * time.Minute
)

func (c TCPConfig) withDefaults() TCPConfig {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	def(&c.MaxFrame, DefaultMaxFrame)
	c.MaxFrame = max(c.MaxFrame, 64)
	def(&c.MaxBatch, DefaultMaxBatch)
	def(&c.MaxInFlight, DefaultMaxInFlight)
	def(&c.ConnsPerPeer, DefaultConnsPerPeer)
	def(&c.Workers, DefaultWorkers)
	defd(&c.DialTimeout, DefaultDialTimeout)
	defd(&c.CallTimeout, DefaultCallTimeout)
	defd(&c.BackoffMin, DefaultBackoffMin)
	defd(&c.BackoffMax, DefaultBackoffMax)
	defd(&c.peerIdle, peerIdleTimeout)
	def(&c.MaxConns, DefaultMaxConns)
	def(&c.MaxCallsPerConn, DefaultMaxCallsPerConn)
	defd(&c.ReadTimeout, DefaultReadTimeout)
	defd(&c.IdleTimeout, DefaultIdleTimeout)
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Stats counts a TCP transport's traffic since it started.
type Stats struct {
	// CheckFrames is the number of check frames sent (gathered batches and
	// CheckMany chunks).
	CheckFrames uint64
	// ChecksSent is the number of checks in those frames;
	// ChecksSent/CheckFrames is the mean batch size.
	ChecksSent uint64
	// CallsSent is the number of call frames sent.
	CallsSent uint64
	// BatchesServed is the number of check frames served by the Handler.
	BatchesServed uint64
	// Dials and DialErrors count outgoing connection attempts.
	Dials, DialErrors uint64
	// BadFrames counts malformed, oversized or foreign-version frames
	// received; each closed its connection.
	BadFrames uint64
	// Timeouts counts requests failed by the default call timeout.
	Timeouts uint64

	// Refusals of incoming connections, each closing its connection
	// except CallsThrottled.

	// HandshakeErrors counts TLS handshakes that failed: most often a
	// peer without the cluster's credentials.
	HandshakeErrors uint64
	// ConnsRefused counts connections closed at accept by MaxConns.
	ConnsRefused uint64
	// ReadTimeouts counts frames (or handshakes) that did not arrive whole
	// within ReadTimeout.
	ReadTimeouts uint64
	// IdleClosed counts connections closed after IdleTimeout without a
	// frame.
	IdleClosed uint64
	// CallsThrottled counts calls that waited for MaxCallsPerConn.
	CallsThrottled uint64
}

type stats struct {
	checkFrames, checksSent, callsSent, batchesServed atomic.Uint64
	dials, dialErrors, badFrames, timeouts            atomic.Uint64
	handshakeErrors, connsRefused, readTimeouts       atomic.Uint64
	idleClosed, callsThrottled                        atomic.Uint64
}

// TCP is the Transport between nodes: persistent TCP (or TLS) connections
// carrying length-prefixed frames, with concurrent checks to one peer
// gathered into batches. It is safe for concurrent use.
type TCP struct {
	cfg  TCPConfig
	ln   net.Listener
	addr string
	log  *logLimiter

	ctx    context.Context // cancelled by Close; Handler calls run under it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	serving   bool
	peers     map[string]*peer
	peerIndex sync.Map               // addr -> *peer: t.peers, readable without t.mu
	conns     map[io.Closer]struct{} // incoming connections

	slots sync.Pool // *slot
	reqs  sync.Pool // *request
	jobs  sync.Pool // *job

	st stats

	sweepParked atomic.Bool   // the sweeper sleeps until a request is sent
	sweepWake   chan struct{} // wakes it
}

var _ Transport = (*TCP)(nil)

// NewTCP listens on cfg.Addr at once and returns a transport that dials
// peers on demand. Incoming requests wait until Serve is called.
func NewTCP(cfg TCPConfig) (*TCP, error) {
	cfg = cfg.withDefaults()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", cfg.Addr, err)
	}
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	t := &TCP{
		cfg:   cfg,
		ln:    ln,
		addr:  cfg.Advertise,
		log:   &logLimiter{log: cfg.Logger},
		peers: make(map[string]*peer),
		conns: make(map[io.Closer]struct{}),

		sweepWake: make(chan struct{}, 1),
	}
	if t.addr == "" {
		t.addr = ln.Addr().String()
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.slots.New = func() any { return &slot{done: make(chan struct{}, 1)} }
	t.reqs.New = func() any { return &request{done: make(chan struct{}, 1)} }
	t.jobs.New = func() any { return new(job) }
	t.wg.Add(1)
	go t.sweep()
	return t, nil
}

// Addr returns the address peers dial.
func (t *TCP) Addr() string { return t.addr }

// Stats returns a snapshot of the transport's counters.
func (t *TCP) Stats() Stats {
	return Stats{
		CheckFrames:   t.st.checkFrames.Load(),
		ChecksSent:    t.st.checksSent.Load(),
		CallsSent:     t.st.callsSent.Load(),
		BatchesServed: t.st.batchesServed.Load(),
		Dials:         t.st.dials.Load(),
		DialErrors:    t.st.dialErrors.Load(),
		BadFrames:     t.st.badFrames.Load(),
		Timeouts:      t.st.timeouts.Load(),

		HandshakeErrors: t.st.handshakeErrors.Load(),
		ConnsRefused:    t.st.connsRefused.Load(),
		ReadTimeouts:    t.st.readTimeouts.Load(),
		IdleClosed:      t.st.idleClosed.Load(),
		CallsThrottled:  t.st.callsThrottled.Load(),
	}
}

// Serve accepts connections and serves their requests with h until Close,
// then returns nil. A second call returns an error at once.
func (t *TCP) Serve(h Handler) error {
	if h == nil {
		return errors.New("transport: Serve with a nil Handler")
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	if t.serving {
		t.mu.Unlock()
		return errors.New("transport: Serve called twice")
	}
	t.serving = true
	t.wg.Add(1) // Close waits for the accept loop to see the listener closed
	t.mu.Unlock()
	defer t.wg.Done()
	var delay time.Duration
	for {
		nc, err := t.ln.Accept()
		if err != nil {
			if t.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || !errors.Is(err, net.ErrClosed) {
				// Out of file descriptors and the like: wait and retry.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				t.log.warn("transport: accept", "err", err)
				select {
				case <-time.After(delay):
				case <-t.ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("transport: accept: %w", err)
		}
		delay = 0
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			nc.Close()
			return nil
		}
		if len(t.conns) >= t.cfg.MaxConns {
			t.mu.Unlock()
			t.st.connsRefused.Add(1)
			t.log.warn("transport: connection refused: too many connections", "remote", nc.RemoteAddr().String(), "max_conns", t.cfg.MaxConns)
			nc.Close()
			continue
		}
		t.conns[nc] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serveConn(nc, h)
	}
}

func (t *TCP) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// Close stops serving, closes every connection, fails requests in flight
// with ErrClosed and waits for the transport's goroutines. It is
// idempotent.
func (t *TCP) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	peers := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	conns := make([]io.Closer, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	t.cancel()
	err := t.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	for _, p := range peers {
		p.close()
	}
	t.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("transport: close: %w", err)
	}
	return nil
}

// dial opens one connection to addr.
func (t *TCP) dial(ctx context.Context, addr string) (net.Conn, error) {
	t.st.dials.Add(1)
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	d := net.Dialer{}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.st.dialErrors.Add(1)
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if t.cfg.TLS != nil {
		cfg := t.cfg.TLS.Clone()
		if cfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				cfg.ServerName = host
			}
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			t.st.dialErrors.Add(1)
			return nil, err
		}
		nc = tc
	}
	return nc, nil
}

// backoff returns the wait after the n-th consecutive failed dial (n >= 1).
func (t *TCP) backoff(n int) time.Duration {
	d := t.cfg.BackoffMin
	for i := 1; i < n && d < t.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, t.cfg.BackoffMax)
	if t.cfg.Rand != nil {
		d = d/2 + time.Duration(t.cfg.Rand()*float64(d/2))
	}
	return d
}

// sweep fails requests that outlive the default call timeout, so that a
// ctx without deadline never waits forever and a lost answer frees its
// in-flight slot, and retires idle peers. It looks every CallTimeout/8
// while requests are in flight; while none are, it sleeps until one is
// sent (wakeSweep) or peerIdle passes, so an idle transport does not wake.
func (t *TCP) sweep() {
	defer t.wg.Done()
	busy := max(t.cfg.CallTimeout/8, time.Millisecond)
	tick := time.NewTimer(busy)
	defer tick.Stop()
	var ps []*peer
	expire := func() (pending bool) {
		now := time.Now().UnixNano()
		ps = ps[:0]
		t.mu.Lock()
		for _, p := range t.peers {
			ps = append(ps, p)
		}
		t.mu.Unlock()
		for _, p := range ps {
			pending = p.expire(now) || pending
			p.maybeRetire(now)
		}
		return pending
	}
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		case <-t.sweepWake:
		}
		next := busy
		if !expire() {
			// Park, then look once more: a request sent before the
			// mark is seen now, one sent after it wakes the sweeper.
			t.sweepParked.Store(true)
			if expire() {
				t.sweepParked.Store(false)
			} else {
				next = t.cfg.peerIdle
			}
		}
		tick.Reset(next)
	}
}

// wakeSweep wakes a parked sweeper; called after a request is pending.
func (t *TCP) wakeSweep() {
	if t.sweepParked.Load() && t.sweepParked.CompareAndSwap(true, false) {
		select {
		case t.sweepWake <- struct{}{}:
		default:
		}
	}
}

// logLimiter logs at most one line a second and counts the rest.
type logLimiter struct {
	log        *slog.Logger
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *logLimiter) warn(msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.last) < time.Second {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.last = now
	n := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Warn(msg, args...)
}

// frameWriter buffers frames for one connection. Concurrent writers append
// under mu; the last one out writes the buffer to the socket, so frames
// written together leave in one system call.
type frameWriter struct {
	nc      net.Conn
	timeout time.Duration
	writers atomic.Int32
	mu      sync.Mutex
	buf     []byte
}

const flushAt = 64 << 10

// begin announces a writer and takes the lock; it returns the buffer to
// append a frame to.
func (w *frameWriter) begin() []byte {
	w.writers.Add(1)
	w.mu.Lock()
	return w.buf
}

// end stores the buffer back and, when no other writer is waiting (or the
// buffer is large), writes it out.
func (w *frameWriter) end(buf []byte) error {
	w.buf = buf
	var err error
	if (w.writers.Add(-1) == 0 || len(w.buf) >= flushAt) && len(w.buf) > 0 {
		_ = w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
		_, err = w.nc.Write(w.buf)
		if cap(w.buf) > 4*flushAt {
			w.buf = nil
		} else {
			w.buf = w.buf[:0]
		}
	}
	w.mu.Unlock()
	return err
}

// readFrame reads the next frame from br. The body aliases br's buffer (or
// *scratch, for frames larger than it) and is valid until the next call.
// A body larger than br's buffer is read into *scratch, grown as its bytes
// arrive rather than from the announced length, so a peer that announces
// a large frame and sends nothing costs no more than the read buffer.
// waitBody, when not nil, is called before the body is awaited (the
// server sets its read deadline there).
func readFrame(br bufioReader, scratch *[]byte, maxFrame int, waitBody func()) (header, []byte, error) {
	hb, err := br.Peek(headerLen)
	if err != nil {
		if len(hb) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return header{}, nil, err
	}
	h, err := parseHeader(hb, maxFrame)
	if err != nil {
		return header{}, nil, err
	}
	if _, err := br.Discard(headerLen); err != nil {
		return header{}, nil, err
	}
	if waitBody != nil && br.Buffered() < h.bodyLen {
		waitBody()
	}
	if h.bodyLen <= br.Size() {
		body, err := br.Peek(h.bodyLen)
		if err != nil {
			return header{}, nil, unexpected(err)
		}
		_, _ = br.Discard(h.bodyLen)
		return h, body, nil
	}
	body := (*scratch)[:0]
	for len(body) < h.bodyLen {
		if len(body) == cap(body) {
			// Double at most: the buffer never outgrows twice the bytes
			// that arrived (plus one read buffer).
			body = slices.Grow(body, min(h.bodyLen-len(body), max(cap(body), br.Size())))
		}
		n, err := br.Read(body[len(body):min(cap(body), h.bodyLen)])
		body = body[:len(body)+n]
		if err != nil && len(body) < h.bodyLen {
			*scratch = body[:0]
			return header{}, nil, unexpected(err)
		}
	}
	*scratch = body[:0]
	return h, body, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// bufioReader is the part of *bufio.Reader that readFrame uses.
type bufioReader interface {
	io.Reader
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Size() int
	Buffered() int
}

const readBufSize = 64 << 10

// peerIdleTimeout is how long a peer without connections or requests is
// kept before it is forgotten.
const peerIdleTimeout = time.Minute
