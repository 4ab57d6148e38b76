package main

// A cluster with encrypted gossip (--gossip-key) and mutual TLS between
// peers (--peer-tls-*), with certificates made by the test.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCerts writes a CA and a certificate for 127.0.0.1 signed by it, as
// PEM files in dir, and returns their paths.
func writeCerts(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ratelimit test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	nodeKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "ratelimitd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &nodeKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("node.pem", "CERTIFICATE", der), write("node-key.pem", "EC PRIVATE KEY", keyDER)
}

// TestClusterSecure: two nodes with the same gossip key and mutual TLS
// between peers join and hold one limit exactly (every check of the
// non-owner crosses the TLS transport); unreadable TLS files stop
// start-up with exit code 2.
func TestClusterSecure(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeCerts(t, dir)
	gkey := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	env := map[string]string{"RATELIMIT_GOSSIP_KEY": gkey, "RATE_LIMIT_DEFAULT_MAX": "10", "RATE_LIMIT_DEFAULT_WINDOW_MS": "3600000"}
	tls := []string{"--peer-tls-cert", cert, "--peer-tls-key", key, "--peer-tls-ca", ca}
	n1 := startNode(t, "s1", env, tls...)
	n2 := startNode(t, "s2", env, append(tls, "--join", n1.Gossip)...)
	waitMembers(t, 30*time.Second, n1, n2)
	allowed := 0
	for i := 0; i < 30; i++ {
		url := n1.URL
		if i%2 == 1 {
			url = n2.URL
		}
		r := check(url, "default", "tls-key", 1)
		if r.Err != nil || (r.Status != http.StatusOK && r.Status != http.StatusTooManyRequests) {
			t.Fatalf("check %d: %+v", i, r)
		}
		if r.Allowed {
			allowed++
		}
	}
	if allowed != 10 {
		t.Errorf("allowed %d of 30 over two nodes, want exactly 10", allowed)
	}
	for _, n := range []*node{n1, n2} {
		if log := n.log.String(); strings.Contains(log, "failure mode decides") {
			t.Errorf("%s fell back to its failure mode: a forward failed over TLS; log:\n%s", n.Name, log)
		}
	}

	code, _, stderr := runToEnd(t, 30*time.Second, nil, "serve", "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
		"--peer-tls-cert", filepath.Join(dir, "nope.pem"), "--peer-tls-key", key, "--peer-tls-ca", ca)
	if code != exitUsage || !strings.Contains(stderr, "--peer-tls-cert") {
		t.Errorf("a missing certificate: exit %d, stderr:\n%s", code, stderr)
	}
	code, _, stderr = runToEnd(t, 30*time.Second, nil, "serve", "--http-addr", "127.0.0.1:0", "--peer-tls-cert", cert)
	if code != exitUsage || !strings.Contains(stderr, "go together") {
		t.Errorf("a certificate alone: exit %d, stderr:\n%s", code, stderr)
	}
	code, _, stderr = runToEnd(t, 30*time.Second, nil, "serve", "--http-addr", "127.0.0.1:0", "--gossip-key", "c2hvcnQ=")
	if code != exitUsage || !strings.Contains(stderr, "--gossip-key: 5 bytes") || strings.Contains(stderr, "c2hvcnQ=") {
		t.Errorf("a short gossip key: exit %d, stderr:\n%s", code, stderr)
	}
}
