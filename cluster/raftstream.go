package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Limits of raft's stream layer: what one incoming connection may take.
const (
	// RaftMaxConns bounds the incoming raft connections open at once; one
	// beyond it is closed at accept. A node's peers keep a few each.
	RaftMaxConns = 64
	// RaftHandshakeTimeout bounds the TLS handshake of an incoming raft
	// connection: a stranger that opens one and sends nothing holds it no
	// longer.
	RaftHandshakeTimeout = 5 * time.Second
	// RaftIdleTimeout closes an incoming raft connection that brings
	// nothing for this long; raft redials when it needs one.
	RaftIdleTimeout = 5 * time.Minute
)

// raftStream is raft's stream layer: TCP, with TLS when the node has
// credentials (the certificates derived from the cluster key, or
// PeerTLS), so that a node without them can neither read the policy
// table, nor vote, nor append to the log. Incoming connections are capped
// and closed when idle; refusals go to refused.
type raftStream struct {
	ln        net.Listener // plain TCP; TLS is layered per connection
	advertise net.Addr
	config    *tls.Config // nil: plain TCP (Insecure)
	slots     chan struct{}
	refused   func(reason, remote string, err error)

	// The open incoming connections, closed with the stream: raft's
	// handler of each would otherwise wait in a read until the peer
	// closes it.
	mu     sync.Mutex
	conns  map[*streamConn]struct{}
	closed bool
}

// newRaftStream listens on bind. advertise, when not nil, is the address
// peers dial; else the listener's, which must then be a specific IP (not
// 0.0.0.0). refused is called on each refused connection.
func newRaftStream(bind string, advertise net.Addr, config *tls.Config, refused func(reason, remote string, err error)) (*raftStream, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	s := &raftStream{ln: ln, advertise: advertise, config: config, slots: make(chan struct{}, RaftMaxConns), refused: refused, conns: map[*streamConn]struct{}{}}
	if tcp, ok := s.Addr().(*net.TCPAddr); !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft address %v is not one peers can dial: set RaftAdvertise", s.Addr())
	}
	return s, nil
}

// Accept returns the next connection within the cap; those beyond it are
// closed and counted.
func (s *raftStream) Accept() (net.Conn, error) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case s.slots <- struct{}{}:
		default:
			s.refused("conn_limit", c.RemoteAddr().String(), nil)
			c.Close()
			continue
		}
		sc := &streamConn{Conn: c, s: s}
		if s.config != nil {
			sc.tls = tls.Server(c, s.config)
			sc.Conn = sc.tls
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			sc.Close()
			return nil, net.ErrClosed
		}
		s.conns[sc] = struct{}{}
		s.mu.Unlock()
		return sc, nil
	}
}

// Close stops listening and closes the incoming connections.
func (s *raftStream) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	return err
}

// Addr is the address peers dial.
func (s *raftStream) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.ln.Addr()
}

// Dial connects to a peer's raft address and completes the handshake
// within timeout. The server name defaults to the dialled host, as on the
// peer transport.
func (s *raftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if s.config == nil {
		return net.DialTimeout("tcp", string(address), timeout)
	}
	cfg := s.config.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(string(address))
		if err != nil {
			return nil, err
		}
		cfg.ServerName = host
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: cfg}
	c, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft over TLS: %w", err)
	}
	return c, nil
}

// streamConn is an incoming raft connection: its first read completes the
// TLS handshake within RaftHandshakeTimeout, and every read must bring
// bytes within RaftIdleTimeout.
type streamConn struct {
	net.Conn
	s         *raftStream
	tls       *tls.Conn // nil on plain TCP
	handshook bool      // only raft's reader goroutine reads
	closeOnce sync.Once
}

// Read reads from the connection. A failed handshake and an idle deadline
// read as io.EOF, which raft takes as a closed connection without logging
// it: the refusal is counted and logged here, under the cap, so a stranger
// cannot flood raft's log.
func (c *streamConn) Read(p []byte) (int, error) {
	if !c.handshook && c.tls != nil {
		_ = c.tls.SetDeadline(time.Now().Add(RaftHandshakeTimeout))
		if err := c.tls.Handshake(); err != nil {
			c.s.refused("handshake", c.RemoteAddr().String(), err)
			c.Close()
			return 0, io.EOF
		}
		_ = c.tls.SetDeadline(time.Time{})
	}
	c.handshook = true
	_ = c.Conn.SetReadDeadline(time.Now().Add(RaftIdleTimeout))
	n, err := c.Conn.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.s.refused("idle", c.RemoteAddr().String(), nil)
		return n, io.EOF
	}
	return n, err
}

func (c *streamConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		<-c.s.slots
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return err
}
