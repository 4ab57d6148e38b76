package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/internal/testpki"
)

func TestTCPMutualTLS(t *testing.T) {
	ca := testpki.NewCA(t)
	srv := newTCP(t, TCPConfig{TLS: ca.Mutual(t, "server"), BackoffMin: time.Millisecond}, nil)
	ctx := context.Background()

	cli := newClient(t, TCPConfig{TLS: ca.Mutual(t, "client")})
	it := CheckItem{Policy: "p", Key: "k", Hits: 2}
	if res, err := cli.Check(ctx, srv.Addr(), it); err != nil || res != expected(it) {
		t.Fatalf("check over mutual TLS: %+v, %v", res, err)
	}
	if got, err := cli.Call(ctx, srv.Addr(), "echo", []byte{0xc0}); err != nil || len(got) != 1 {
		t.Fatalf("call over mutual TLS: %q, %v", got, err)
	}

	refused := func(name string, cfg *tls.Config) {
		t.Helper()
		c := newClient(t, TCPConfig{TLS: cfg})
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if res, err := c.Check(ctx, srv.Addr(), it); err == nil {
			t.Errorf("%s: check allowed (%+v)", name, res)
		} else if !errors.Is(err, ErrUnreachable) {
			t.Errorf("%s: %v, want ErrUnreachable", name, err)
		}
	}
	refused("client without a certificate", &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS13})
	other := testpki.NewCA(t)
	foreign := other.Mutual(t, "intruder")
	foreign.RootCAs = ca.Pool // trusts the server, but is not trusted by it
	refused("client with a certificate of another CA", foreign)
	refused("plain TCP client", nil)

	// A client that does not trust the server's CA refuses it.
	distrust := ca.Mutual(t, "client2")
	distrust.RootCAs = other.Pool
	refused("client distrusting the server", distrust)

	// The server kept serving the legitimate client.
	if _, err := cli.Check(ctx, srv.Addr(), it); err != nil {
		t.Fatal(err)
	}
}
