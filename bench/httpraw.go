package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// rawPool is a pool of plain HTTP/1.1 keep-alive connections to one node.
// A call takes a connection, writes the request, reads the answer and puts
// the connection back: no goroutines per connection and no allocation per
// request, unlike net/http's client, whose reader and writer goroutines
// cost the load generator about as much CPU as the server spends on the
// check. It speaks only what the check API needs: POST with a body, answers
// with Content-Length or chunked bodies.
type rawPool struct {
	host    string // host:port to dial and send as Host
	timeout time.Duration
	dialer  net.Dialer
	free    chan *rawConn
}

type rawConn struct {
	c    net.Conn
	br   *bufio.Reader
	wbuf []byte
	// watch is the context whose end breaks the connection's wait (a past
	// deadline); it is registered once per context, not per request.
	watch context.Context
	stop  func() bool
}

func (c *rawConn) close() {
	if c.stop != nil {
		c.stop()
	}
	c.c.Close()
}

func newRawPool(u *url.URL, conns int, timeout time.Duration) *rawPool {
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	return &rawPool{
		host:    host,
		timeout: timeout,
		dialer:  net.Dialer{Timeout: min(timeout, 2*time.Second), KeepAlive: 30 * time.Second},
		free:    make(chan *rawConn, conns),
	}
}

func (p *rawPool) get(ctx context.Context) (c *rawConn, reused bool, err error) {
	select {
	case c := <-p.free:
		return c, true, nil
	default:
	}
	nc, err := p.dialer.DialContext(ctx, "tcp", p.host)
	if err != nil {
		return nil, false, err
	}
	return &rawConn{c: nc, br: bufio.NewReaderSize(nc, 16<<10)}, false, nil
}

func (p *rawPool) put(c *rawConn) {
	select {
	case p.free <- c:
	default:
		c.close()
	}
}

// close closes the idle connections.
func (p *rawPool) close() {
	for {
		select {
		case c := <-p.free:
			c.close()
		default:
			return
		}
	}
}

// staleError is a failure on a reused connection before any answer byte:
// the server had closed it while idle, so the request is retried once on a
// new connection.
type staleError struct{ err error }

func (e *staleError) Error() string { return e.err.Error() }
func (e *staleError) Unwrap() error { return e.err }

// post sends body to path and reads the answer into resp.
func (p *rawPool) post(ctx context.Context, path string, body []byte, resp []byte) (int, []byte, error) {
	for attempt := 0; ; attempt++ {
		c, reused, err := p.get(ctx)
		if err != nil {
			return 0, resp, err
		}
		status, out, keep, err := p.roundTrip(ctx, c, path, body, resp)
		if err != nil {
			c.close()
			var stale *staleError
			if errors.As(err, &stale) {
				if reused && attempt == 0 && ctx.Err() == nil {
					continue
				}
				err = stale.err
			}
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return 0, out, err
		}
		if keep {
			p.put(c)
		} else {
			c.close()
		}
		return status, out, nil
	}
}

func (p *rawPool) roundTrip(ctx context.Context, c *rawConn, path string, body, resp []byte) (status int, out []byte, keep bool, err error) {
	out = resp
	if c.watch != ctx {
		if c.stop != nil {
			c.stop()
		}
		c.watch = ctx
		c.stop = context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })
	}
	if err := c.c.SetDeadline(time.Now().Add(p.timeout)); err != nil {
		return 0, out, false, err
	}
	if err := ctx.Err(); err != nil {
		return 0, out, false, err
	}
	w := append(c.wbuf[:0], "POST "...)
	w = append(w, path...)
	w = append(w, " HTTP/1.1\r\nHost: "...)
	w = append(w, p.host...)
	w = append(w, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	w = strconv.AppendInt(w, int64(len(body)), 10)
	w = append(w, "\r\n\r\n"...)
	w = append(w, body...)
	c.wbuf = w
	if _, err := c.c.Write(w); err != nil {
		return 0, out, false, &staleError{err}
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if len(line) == 0 && (err == io.EOF || errors.Is(err, net.ErrClosed) || isReset(err)) {
			return 0, out, false, &staleError{err}
		}
		return 0, out, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, out, false, &kindError{kind: "bad_answer", err: fmt.Errorf("bench: bad status line %q", line)}
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, out, false, &kindError{kind: "bad_answer", err: fmt.Errorf("bench: bad status line %q", line)}
	}
	keep = line[7] == '1'
	length, chunked := -1, false
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			return 0, out, false, err
		}
		h := bytes.TrimRight(line, "\r\n")
		if len(h) == 0 {
			break
		}
		name, val, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		val = bytes.TrimSpace(val)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(val)); err != nil || length < 0 {
				return 0, out, false, &kindError{kind: "bad_answer", err: fmt.Errorf("bench: bad Content-Length %q", val)}
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(bytes.ToLower(val), []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(val, []byte("close")) {
				keep = false
			}
		}
	}
	out = out[:0]
	switch {
	case chunked:
		for {
			line, err = c.br.ReadSlice('\n')
			if err != nil {
				return 0, out, false, err
			}
			sz := bytes.TrimRight(line, "\r\n")
			if i := bytes.IndexByte(sz, ';'); i >= 0 {
				sz = sz[:i]
			}
			n, perr := strconv.ParseInt(string(bytes.TrimSpace(sz)), 16, 32)
			if perr != nil || n < 0 {
				return 0, out, false, &kindError{kind: "bad_answer", err: fmt.Errorf("bench: bad chunk size %q", sz)}
			}
			if n == 0 {
				for { // trailers, up to the empty line
					line, err = c.br.ReadSlice('\n')
					if err != nil {
						return 0, out, false, err
					}
					if len(bytes.TrimRight(line, "\r\n")) == 0 {
						return status, out, keep, nil
					}
				}
			}
			if out, err = readN(c.br, out, int(n)+2); err != nil {
				return 0, out, false, err
			}
			out = out[:len(out)-2] // the chunk's CRLF
		}
	case length >= 0:
		if out, err = readN(c.br, out, length); err != nil {
			return 0, out, false, err
		}
	default:
		if out, err = readAll(c.br, out); err != nil {
			return 0, out, false, err
		}
		keep = false
	}
	return status, out, keep, nil
}

// readN appends exactly n bytes of r to b.
func readN(r io.Reader, b []byte, n int) ([]byte, error) {
	start := len(b)
	if cap(b)-start < n {
		nb := make([]byte, start, start+n)
		copy(nb, b)
		b = nb
	}
	b = b[:start+n]
	_, err := io.ReadFull(r, b[start:])
	return b, err
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}
