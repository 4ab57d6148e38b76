package main

// A cluster with encrypted gossip (--gossip-key) and mutual TLS between
// peers (--peer-tls-*), with certificates made by the test.

import (
	"encoding/base64"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/internal/testpki"
)

// TestClusterSecure: two nodes with the same gossip key and mutual TLS
// between peers join and hold one limit exactly (every check of the
// non-owner crosses the TLS transport) and replicate a policy written on
// the second (raft over the same TLS); unreadable TLS files stop
// start-up with exit code 2.
func TestClusterSecure(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := testpki.NewCA(t).WriteFiles(t, dir, "node")
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
	// A policy written through the second node reaches both: raft runs
	// over the same mutual TLS.
	resp, err := adminDo("PUT", n2.URL+"/v1/policies/auth", []byte(`{"name":"auth","limit":4,"window_ms":900000}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT /v1/policies/auth through the second node: %d", resp.StatusCode)
	}
	waitLimit(t, []*node{n1, n2}, "auth", 4)
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
