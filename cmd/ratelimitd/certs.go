package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certCheckEvery is how often a certReloader looks at its files.
const certCheckEvery = time.Second

// certReloader serves a certificate from PEM files and loads them again when
// they change (looked at once a second at most, on a handshake), so that a
// renewed certificate takes effect without a restart. Files that change but
// do not load (half written) leave the current certificate in place until
// they change again.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string    // sizes and modification times of the files loaded or tried
	checked time.Time // when the files were last looked at
}

// newCertReloader loads the pair once, so that a bad file is a start-up
// error.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	r.stamp = r.fileStamp()
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert, r.checked = &c, time.Now()
	return r, nil
}

// fileStamp names the files' current versions.
func (r *certReloader) fileStamp() string {
	s := ""
	for _, f := range []string{r.certFile, r.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			s += fmt.Sprintf("%d@%d;", fi.Size(), fi.ModTime().UnixNano())
		} else {
			s += "missing;"
		}
	}
	return s
}

// current returns the certificate to present, reloading it first if the
// files changed.
func (r *certReloader) current() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < certCheckEvery {
		return r.cert
	}
	r.checked = time.Now()
	stamp := r.fileStamp()
	if stamp == r.stamp {
		return r.cert
	}
	r.stamp = stamp
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.log.Warn("certificate files changed but do not load; the current certificate stays", "cert", r.certFile, "err", err)
		return r.cert
	}
	r.cert = &c
	attrs := []any{"cert", r.certFile}
	if c.Leaf != nil {
		attrs = append(attrs, "subject", c.Leaf.Subject.String(), "not_after", c.Leaf.NotAfter)
	}
	r.log.Info("certificate reloaded", attrs...)
	return r.cert
}

// serve sets cfg to present r's certificate, as a server and as a client.
func (r *certReloader) serve(cfg *tls.Config) *tls.Config {
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.current(), nil }
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return r.current(), nil }
	return cfg
}
