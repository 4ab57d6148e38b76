package transport

import "context"

type peerNameKey struct{}

// WithPeerName returns a copy of ctx that carries the authenticated name of
// the peer a request came from. Transports set it on the ctx they pass to
// a Handler; tests may set it to call a Handler directly.
func WithPeerName(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, peerNameKey{}, name)
}

// PeerName returns the authenticated name of the peer whose request a
// Handler serves: the Subject CommonName of the certificate it presented
// on a TLS connection (with a cluster key, the sending node's name), the
// sender's address on a Network, and ok == false on a connection without
// a client certificate (plain TCP).
func PeerName(ctx context.Context) (name string, ok bool) {
	name, ok = ctx.Value(peerNameKey{}).(string)
	return name, ok && name != ""
}
