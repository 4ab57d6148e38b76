package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/vibewell/ratelimit/internal/msgpackenc"
)

// srvConn is one incoming connection. Its reader goroutine decodes frames;
// check batches go to a small pool of workers started on demand (so one
// slow batch does not hold up the others), calls to a goroutine each.
type srvConn struct {
	t     *TCP
	nc    net.Conn
	h     Handler
	ctx   context.Context // t.ctx with the peer's name
	w     frameWriter
	in    interner
	buf   []byte        // body of frames larger than the read buffer
	calls chan struct{} // a token per call being served (MaxCallsPerConn)

	work    chan *job
	workers int
	wg      sync.WaitGroup
}

// job is one check batch to serve.
type job struct {
	id      uint32
	items   []CheckItem
	results []CheckResult
}

func (t *TCP) serveConn(nc net.Conn, h Handler) {
	defer t.wg.Done()
	defer func() {
		nc.Close()
		t.mu.Lock()
		delete(t.conns, nc)
		t.mu.Unlock()
	}()
	ctx := t.ctx
	if tc, ok := nc.(*tls.Conn); ok {
		_ = tc.SetDeadline(time.Now().Add(t.cfg.ReadTimeout))
		if err := tc.HandshakeContext(t.ctx); err != nil {
			t.st.handshakeErrors.Add(1)
			t.log.warn("transport: connection refused: tls handshake failed", "remote", nc.RemoteAddr().String(), "err", err)
			return
		}
		_ = tc.SetDeadline(time.Time{})
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			ctx = WithPeerName(ctx, certs[0].Subject.CommonName)
		}
	} else if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c := &srvConn{
		t:     t,
		nc:    nc,
		h:     h,
		ctx:   ctx,
		w:     frameWriter{nc: nc, timeout: t.cfg.CallTimeout},
		in:    make(interner),
		work:  make(chan *job),
		calls: make(chan struct{}, t.cfg.MaxCallsPerConn),
	}
	err := c.read()
	nc.Close() // the answers still being written fail at once
	close(c.work)
	c.wg.Wait()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, errIdle) && t.ctx.Err() == nil {
		t.log.warn("transport: closing connection", "remote", nc.RemoteAddr().String(), "err", err)
	}
}

// Errors that end an incoming connection on a deadline.
var (
	errIdle        = errors.New("transport: connection idle past IdleTimeout")
	errReadTimeout = errors.New("transport: frame not received within ReadTimeout")
)

// read serves frames until the connection fails or breaks the protocol.
// A frame must begin within IdleTimeout and, once begun, arrive whole
// within ReadTimeout.
func (c *srvConn) read() error {
	br := bufio.NewReaderSize(c.nc, readBufSize)
	inBody := false
	bodyDeadline := func() {
		inBody = true
		_ = c.nc.SetReadDeadline(time.Now().Add(c.t.cfg.ReadTimeout))
	}
	for {
		if br.Buffered() < headerLen {
			_ = c.nc.SetReadDeadline(time.Now().Add(c.t.cfg.IdleTimeout))
		}
		inBody = false
		h, body, err := readFrame(br, &c.buf, c.t.cfg.MaxFrame, bodyDeadline)
		if err != nil {
			switch {
			case errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrBadFrame):
				c.t.st.badFrames.Add(1)
			case errors.Is(err, os.ErrDeadlineExceeded) && inBody:
				c.t.st.readTimeouts.Add(1)
				err = errReadTimeout
			case errors.Is(err, os.ErrDeadlineExceeded):
				c.t.st.idleClosed.Add(1)
				err = errIdle
			}
			return err
		}
		if h.version != Version {
			c.t.st.badFrames.Add(1)
			c.writeError(h.id, codeVersion, "unsupported protocol version")
			return ErrVersion
		}
		switch h.typ {
		case frameCheck:
			j := c.t.jobs.Get().(*job)
			j.id = h.id
			j.items, err = decodeCheckBatch(body, j.items, c.in)
			if err != nil {
				c.t.jobs.Put(j)
				c.t.st.badFrames.Add(1)
				c.writeError(h.id, codeBadFrame, "malformed check batch")
				return err
			}
			c.dispatch(j)
		case frameCall:
			method, payload, err := decodePair(body)
			if err != nil {
				c.t.st.badFrames.Add(1)
				c.writeError(h.id, codeBadFrame, "malformed call")
				return err
			}
			m, p := string(method), append([]byte(nil), payload...)
			select {
			case c.calls <- struct{}{}:
			default:
				c.t.st.callsThrottled.Add(1)
				c.t.log.warn("transport: calls throttled: too many in flight on one connection", "remote", c.nc.RemoteAddr().String(), "max_calls_per_conn", c.t.cfg.MaxCallsPerConn)
				select {
				case c.calls <- struct{}{}:
				case <-c.t.ctx.Done():
					return ErrClosed
				}
			}
			c.wg.Add(1)
			go c.call(h.id, m, p)
		default:
			c.t.st.badFrames.Add(1)
			c.writeError(h.id, codeBadType, "unknown frame type")
			return ErrBadFrame
		}
	}
}

// dispatch hands j to an idle worker, starts one when none is idle and the
// pool has room, or else waits for one (back-pressure on the peer).
func (c *srvConn) dispatch(j *job) {
	select {
	case c.work <- j:
		return
	default:
	}
	if c.workers < c.t.cfg.Workers {
		c.workers++
		c.wg.Add(1)
		go c.worker(j)
		return
	}
	c.work <- j
}

func (c *srvConn) worker(j *job) {
	defer c.wg.Done()
	for ; j != nil; j = <-c.work {
		c.serveChecks(j)
	}
}

func (c *srvConn) serveChecks(j *job) {
	n := len(j.items)
	if cap(j.results) < n {
		j.results = make([]CheckResult, n)
	}
	j.results = j.results[:n]
	clear(j.results)
	c.h.HandleChecks(c.ctx, j.items, j.results)
	c.t.st.batchesServed.Add(1)

	buf := c.w.begin()
	start := len(buf)
	buf = appendHeader(buf, frameCheckResp, j.id)
	buf = appendResultBatch(buf, j.results)
	if !finishFrame(buf, start, c.t.cfg.MaxFrame) {
		buf = buf[:start]
		buf = appendHeader(buf, frameError, j.id)
		buf = appendErrorBody(buf, codeTooLarge, "answer exceeds the maximum frame size")
		finishFrame(buf, start, c.t.cfg.MaxFrame)
	}
	err := c.w.end(buf)
	clear(j.items) // drop the strings
	j.items = j.items[:0]
	c.t.jobs.Put(j)
	if err != nil {
		c.nc.Close() // the reader sees it and ends the connection
	}
}

func (c *srvConn) call(id uint32, method string, body []byte) {
	defer c.wg.Done()
	defer func() { <-c.calls }()
	resp, err := c.h.HandleCall(c.ctx, method, body)
	buf := c.w.begin()
	start := len(buf)
	buf = appendHeader(buf, frameCallResp, id)
	buf = append(buf, 0x92)
	if err != nil {
		buf = msgpackenc.AppendString(buf, err.Error())
		buf = msgpackenc.AppendBytes(buf, nil)
	} else {
		buf = append(buf, 0xc0)
		buf = msgpackenc.AppendBytes(buf, resp)
	}
	if !finishFrame(buf, start, c.t.cfg.MaxFrame) {
		buf = buf[:start]
		buf = appendHeader(buf, frameError, id)
		buf = appendErrorBody(buf, codeTooLarge, "answer exceeds the maximum frame size")
		finishFrame(buf, start, c.t.cfg.MaxFrame)
	}
	if err := c.w.end(buf); err != nil {
		c.nc.Close()
	}
}

// writeError sends an error frame for request id, best effort.
func (c *srvConn) writeError(id uint32, code int, msg string) {
	buf := c.w.begin()
	start := len(buf)
	buf = appendHeader(buf, frameError, id)
	buf = appendErrorBody(buf, code, msg)
	finishFrame(buf, start, c.t.cfg.MaxFrame)
	_ = c.w.end(buf)
}
