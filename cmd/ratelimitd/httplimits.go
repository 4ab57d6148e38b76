package main

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// countReadTimeouts wraps the HTTP listener so that every connection
// closed because its client did not send a request within
// --http-read-timeout (http.Server's ReadHeaderTimeout and ReadTimeout)
// is counted.
func countReadTimeouts(ln net.Listener, reg prometheus.Registerer) (net.Listener, error) {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ratelimit", Subsystem: "http", Name: "read_timeouts_total",
		Help: "HTTP connections whose client did not send a request's headers and body within --http-read-timeout; they are closed.",
	})
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return &timeoutListener{Listener: ln, timeouts: c}, nil
}

type timeoutListener struct {
	net.Listener
	timeouts prometheus.Counter
}

func (l *timeoutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	return &timeoutConn{Conn: c, timeouts: l.timeouts}, nil
}

// timeoutConn counts a read that ends at its deadline, once per
// connection. net/http also ends reads by setting a deadline in the past
// (to stop its background read after a request); those are not counted.
type timeoutConn struct {
	net.Conn
	timeouts prometheus.Counter
	deadline atomic.Int64 // the read deadline, Unix ns; 0: none
	counted  atomic.Bool
}

// pastDeadline: a deadline before it only aborts a read.
var pastDeadline = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

func (c *timeoutConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() && c.deadline.Load() > pastDeadline && !c.counted.Swap(true) {
		c.timeouts.Inc()
	}
	return n, err
}

func (c *timeoutConn) SetReadDeadline(t time.Time) error {
	c.deadline.Store(deadlineNanos(t))
	return c.Conn.SetReadDeadline(t)
}

func (c *timeoutConn) SetDeadline(t time.Time) error {
	c.deadline.Store(deadlineNanos(t))
	return c.Conn.SetDeadline(t)
}

func deadlineNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
