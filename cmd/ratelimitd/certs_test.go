package main

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/internal/testpki"
)

// A certReloader serves the files' certificate, picks up new files once
// its check interval has passed, and keeps the last good certificate when
// the files change into something that does not load.
func TestCertReloader(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	_, certFile, keyFile := ca.WriteFiles(t, dir, "api")
	var logs bytes.Buffer
	r, err := newCertReloader(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first := r.current().Certificate[0]
	ca.WriteFiles(t, dir, "api") // a renewed certificate, new serial
	bump(t, certFile, keyFile)
	if got := r.current().Certificate[0]; !bytes.Equal(got, first) {
		t.Fatal("reloaded within the check interval")
	}
	r.checked = time.Time{} // the interval has passed
	second := r.current().Certificate[0]
	if bytes.Equal(second, first) || !strings.Contains(logs.String(), "certificate reloaded") {
		t.Fatalf("not reloaded after the files changed; log:\n%s", logs.String())
	}

	if err := os.WriteFile(keyFile, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	bump(t, keyFile)
	r.checked = time.Time{}
	if got := r.current().Certificate[0]; !bytes.Equal(got, second) || !strings.Contains(logs.String(), "do not load") {
		t.Fatalf("a bad key file: certificate replaced or no warning; log:\n%s", logs.String())
	}

	cfg := r.serve(&tls.Config{})
	if c, err := cfg.GetCertificate(nil); err != nil || !bytes.Equal(c.Certificate[0], second) {
		t.Errorf("GetCertificate: %v", err)
	}
	if c, err := cfg.GetClientCertificate(nil); err != nil || !bytes.Equal(c.Certificate[0], second) {
		t.Errorf("GetClientCertificate: %v", err)
	}

	if _, err := newCertReloader(certFile, keyFile, slog.Default()); err == nil {
		t.Error("a bad key file loaded at start")
	}
}

// bump moves the files' modification time forward, so that a rewrite
// within the file system's time resolution still shows.
func bump(t *testing.T, files ...string) {
	t.Helper()
	at := time.Now().Add(time.Duration(len(files)) * time.Minute)
	for _, f := range files {
		if err := os.Chtimes(f, at, at); err != nil {
			t.Fatal(err)
		}
	}
}
