package cluster

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// tlsStream is raft's stream layer over TLS with the peer transport's
// configuration: with PeerTLS set, raft's traffic (the policy table) is
// encrypted, and a node without a certificate of the cluster's CA can
// neither read it nor vote nor append to the log.
type tlsStream struct {
	net.Listener // a TLS listener
	advertise    net.Addr
	config       *tls.Config
}

// newTLSStream listens on bind with config. advertise, when not nil, is
// the address peers dial; else the listener's, which must then be a
// specific IP (not 0.0.0.0).
func newTLSStream(bind string, advertise net.Addr, config *tls.Config) (*tlsStream, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	s := &tlsStream{Listener: tls.NewListener(ln, config), advertise: advertise, config: config}
	if tcp, ok := s.Addr().(*net.TCPAddr); !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft address %v is not one peers can dial: set RaftAdvertise", s.Addr())
	}
	return s, nil
}

// Addr is the address peers dial.
func (s *tlsStream) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.Listener.Addr()
}

// Dial connects to a peer's raft address and completes the handshake
// within timeout. The server name defaults to the dialled host, as on the
// peer transport.
func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
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
