package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// nodeURL turns --addr into a base URL: host:port, as --http-addr takes
// it, means http://host:port.
func nodeURL(addr string) string {
	base := strings.TrimRight(addr, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return base
}

// caCertSetting is the --ca-cert setting of the commands that talk to a
// node.
func caCertSetting(p *string) setting {
	return stringOpt(p, "ca-cert", "",
		"PEM CA certificates that an https node's certificate may chain to, beside the system's.").noFile().defaultDoc("the system's")
}

// nodeClient returns the HTTP client of a command that talks to a node:
// with caFile, an https node's certificate may also chain to the CAs in it
// (a private CA, as --tls-cert of serve often is).
func nodeClient(timeout time.Duration, caFile string, readFile func(string) ([]byte, error)) (*http.Client, error) {
	c := &http.Client{Timeout: timeout}
	tc, err := nodeTLS(caFile, readFile)
	if err != nil || tc == nil {
		return c, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	c.Transport = tr
	return c, nil
}

// nodeTLS is the TLS client configuration that trusts the CAs in caFile
// beside the system's, or nil when caFile is empty.
func nodeTLS(caFile string, readFile func(string) ([]byte, error)) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := readFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-cert: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca-cert: %s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
