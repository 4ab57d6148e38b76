package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/vibewell/ratelimit/bucket"

	"github.com/vibewell/ratelimit/internal/testpki"
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

func TestTLS(t *testing.T) {
	ca := testpki.NewCA(t)
	caFile, certFile, keyFile := ca.WriteFiles(t, t.TempDir(), "server")
	pool := ca.Pool
	srv := startRedis(t, true,
		"--tls-cert-file", certFile,
		"--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile,
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
		// The client retries a failed handshake; the bound is long enough
		// for every retry to fail on the certificate on a loaded machine,
		// so the error read is the certificate's, not the deadline's.
		_, err := New(context.Background(), Options{URL: srv.url(), Password: "tls-pw", Timeout: 10 * time.Second})
		if !errors.Is(err, ErrConfig) || !errors.Is(err, bucket.ErrBackend) {
			t.Fatalf("New against a certificate of an unknown CA: %v, want ErrConfig", err)
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("the error does not mention the certificate: %v", err)
		}
	})
}
