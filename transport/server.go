package transport

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// srvConn is one incoming connection. Its reader goroutine decodes frames;
// check batches go to a small pool of workers started on demand (so one
// slow batch does not hold up the others), calls to a goroutine each.
type srvConn struct {
	t   *TCP
	nc  net.Conn
	h   Handler
	w   frameWriter
	in  interner
	buf []byte // body of frames larger than the read buffer

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
	if tc, ok := nc.(*tls.Conn); ok {
		_ = tc.SetDeadline(time.Now().Add(t.cfg.DialTimeout))
		if err := tc.HandshakeContext(t.ctx); err != nil {
			t.log.warn("transport: tls handshake", "remote", nc.RemoteAddr().String(), "err", err)
			return
		}
		_ = tc.SetDeadline(time.Time{})
	} else if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c := &srvConn{
		t:    t,
		nc:   nc,
		h:    h,
		w:    frameWriter{nc: nc, timeout: t.cfg.CallTimeout},
		in:   make(interner),
		work: make(chan *job),
	}
	err := c.read()
	nc.Close() // the answers still being written fail at once
	close(c.work)
	c.wg.Wait()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && t.ctx.Err() == nil {
		t.log.warn("transport: closing connection", "remote", nc.RemoteAddr().String(), "err", err)
	}
}

// read serves frames until the connection fails or breaks the protocol.
func (c *srvConn) read() error {
	br := bufio.NewReaderSize(c.nc, readBufSize)
	for {
		h, body, err := readFrame(br, &c.buf, c.t.cfg.MaxFrame)
		if err != nil {
			if errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrBadFrame) {
				c.t.st.badFrames.Add(1)
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
	c.h.HandleChecks(c.t.ctx, j.items, j.results)
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
	resp, err := c.h.HandleCall(c.t.ctx, method, body)
	buf := c.w.begin()
	start := len(buf)
	buf = appendHeader(buf, frameCallResp, id)
	buf = append(buf, 0x92)
	if err != nil {
		buf = appendString(buf, err.Error())
		buf = appendBytes(buf, nil)
	} else {
		buf = append(buf, 0xc0)
		buf = appendBytes(buf, resp)
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
