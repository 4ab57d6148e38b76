package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// node issues a certificate for a node: valid for 127.0.0.1, usable as
// server and as client.
func (ca *testCA) node(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mutual returns the TLS configuration of a node of ca.
func (ca *testCA) mutual(t *testing.T, name string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{ca.node(t, name)},
		RootCAs:      ca.pool,
		ClientCAs:    ca.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

func TestTCPMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	srv := newTCP(t, TCPConfig{TLS: ca.mutual(t, "server"), BackoffMin: time.Millisecond}, nil)
	ctx := context.Background()

	cli := newClient(t, TCPConfig{TLS: ca.mutual(t, "client")})
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
	refused("client without a certificate", &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13})
	other := newTestCA(t)
	foreign := other.mutual(t, "intruder")
	foreign.RootCAs = ca.pool // trusts the server, but is not trusted by it
	refused("client with a certificate of another CA", foreign)
	refused("plain TCP client", nil)

	// A client that does not trust the server's CA refuses it.
	distrust := ca.mutual(t, "client2")
	distrust.RootCAs = other.pool
	refused("client distrusting the server", distrust)

	// The server kept serving the legitimate client.
	if _, err := cli.Check(ctx, srv.Addr(), it); err != nil {
		t.Fatal(err)
	}
}
