package redisstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/vibewell/ratelimit/bucket"
)

// mustCheck takes one hit of a fresh key and fails the test on an error.
func mustCheck(t *testing.T, s *Store) {
	t.Helper()
	p := bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}
	d, err := s.Take(context.Background(), bucket.Key{Policy: "p", ID: "k"}, p, 1, time.Now())
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if !d.Allowed || d.Limit != 10 {
		t.Fatalf("check: %+v", d)
	}
}

func TestPassword(t *testing.T) {
	const password = "s3cret-pw"
	srv := startRedis(t, false, "--requirepass", password)
	ctx := context.Background()

	t.Run("Option", func(t *testing.T) {
		mustCheck(t, newTestStore(t, srv.url(), func(o *Options) { o.Password = password }))
	})
	t.Run("InURL", func(t *testing.T) {
		mustCheck(t, newTestStore(t, "redis://:"+password+"@"+srv.addr()+"/0"))
	})
	for name, pw := range map[string]string{"Wrong": "not-it", "Missing": ""} {
		t.Run(name, func(t *testing.T) {
			s, err := New(ctx, Options{URL: srv.url(), Password: pw, Timeout: 2 * time.Second})
			if err == nil {
				s.Close()
				t.Fatal("New succeeded with a wrong password")
			}
			if !errors.Is(err, ErrAuth) || !errors.Is(err, bucket.ErrBackend) {
				t.Fatalf("New: %v, want ErrAuth and bucket.ErrBackend", err)
			}
			if pw != "" && strings.Contains(err.Error(), pw) {
				t.Fatalf("the error shows the password: %v", err)
			}
			if !strings.Contains(err.Error(), "REDIS_PASSWORD") {
				t.Fatalf("the error does not say what to check: %v", err)
			}
		})
	}
}

func TestBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, o := range []Options{
		{URL: "http://127.0.0.1:6379"},
		{URL: "redis://127.0.0.1:6379/notadb"},
		{URL: "redis://127.0.0.1:6379/0/1"},
		{URL: "unix:///tmp/redis.sock"},
		{URL: "redis://%zz"},
		{URL: "redis://127.0.0.1:6379", Prefix: "rl:{x}:"},
	} {
		s, err := New(ctx, o)
		if err == nil {
			s.Close()
			t.Fatalf("New(%+v) succeeded", o)
		}
		if !errors.Is(err, ErrConfig) || errors.Is(err, bucket.ErrBackend) {
			t.Fatalf("New(URL %q, prefix %q): %v, want ErrConfig and not ErrBackend", o.URL, o.Prefix, err)
		}
	}
	_, err := New(ctx, Options{URL: "redis://user:hunter2@127.0.0.1:6379/x"})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("a bad URL's error must not show its password: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	port := freePort(t) // nothing listens there any more
	const timeout = 500 * time.Millisecond
	start := time.Now()
	_, err := New(context.Background(), Options{URL: "redis://127.0.0.1:" + strconv.Itoa(port), Timeout: timeout})
	took := time.Since(start)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, bucket.ErrBackend) {
		t.Fatalf("New to a closed port: %v, want ErrUnavailable", err)
	}
	if took > timeout+250*time.Millisecond {
		t.Fatalf("New took %v, past the timeout %v", took, timeout)
	}
	if !strings.Contains(err.Error(), "127.0.0.1:"+strconv.Itoa(port)) {
		t.Fatalf("the error does not name the server: %v", err)
	}
}

func TestMetricsRegistration(t *testing.T) {
	url := testURL(t)
	reg := prometheus.NewRegistry()
	s := newTestStore(t, url, func(o *Options) { o.Metrics = reg })
	if _, err := New(context.Background(), Options{URL: url, Metrics: reg}); !errors.Is(err, ErrConfig) {
		t.Fatalf("a second store on one registry: %v, want ErrConfig", err)
	}
	s.Close()
	s2 := newTestStore(t, url, func(o *Options) { o.Metrics = reg })
	mustCheck(t, s2)
}

// writeTestPKI writes a CA and a server certificate for 127.0.0.1 and
// localhost into dir, and returns the CA pool.
func writeTestPKI(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ratelimit test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.crt", "CERTIFICATE", caDER)
	write("server.crt", "CERTIFICATE", der)
	write("server.key", "EC PRIVATE KEY", keyDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	pool := writeTestPKI(t, dir)
	srv := startRedis(t, true,
		"--tls-cert-file", filepath.Join(dir, "server.crt"),
		"--tls-key-file", filepath.Join(dir, "server.key"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.crt"),
		"--tls-auth-clients", "no",
		"--requirepass", "tls-pw")

	t.Run("Rediss", func(t *testing.T) {
		s := newTestStore(t, srv.url(), func(o *Options) {
			o.Password = "tls-pw"
			o.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		})
		mustCheck(t, s)
		if s.client.(*redis.Client).Options().TLSConfig == nil || s.client.(*redis.Client).Options().TLSConfig.ServerName != "127.0.0.1" {
			t.Fatalf("TLS config %+v, want server name 127.0.0.1", s.client.(*redis.Client).Options().TLSConfig)
		}
	})
	t.Run("TLSFlagWithRedisURL", func(t *testing.T) {
		// REDIS_TLS=true with a redis:// URL.
		s := newTestStore(t, "redis://:tls-pw@"+srv.addr()+"/0", func(o *Options) {
			o.TLS = true
			o.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		})
		mustCheck(t, s)
	})
	t.Run("UnknownCA", func(t *testing.T) {
		_, err := New(context.Background(), Options{URL: srv.url(), Password: "tls-pw", Timeout: 2 * time.Second})
		if !errors.Is(err, ErrConfig) || !errors.Is(err, bucket.ErrBackend) {
			t.Fatalf("New against a certificate of an unknown CA: %v, want ErrConfig", err)
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("the error does not mention the certificate: %v", err)
		}
	})
}
