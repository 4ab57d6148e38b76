package main

// A cluster with encrypted gossip (--gossip-key) and mutual TLS between
// peers (--peer-tls-*), with certificates made by the test.

import (
	"crypto/tls"
	"encoding/base64"
	"net/http"
	"os"
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
	// Own credentials, no cluster key (an empty variable is unset).
	env := map[string]string{"RATELIMIT_GOSSIP_KEY": gkey, "RATELIMIT_CLUSTER_KEY": "", "RATE_LIMIT_DEFAULT_MAX": "10", "RATE_LIMIT_DEFAULT_WINDOW_MS": "3600000"}
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

// TestServeHTTPS: with --tls-cert and --tls-key the API answers over HTTPS
// only; check, policy and bench reach it with --ca-cert, and refuse a
// certificate of an unknown CA without it; a plain HTTP request is
// refused; half a key pair or an unreadable file stops start-up with exit
// code 2.
func TestServeHTTPS(t *testing.T) {
	dir := t.TempDir()
	pki := testpki.NewCA(t)
	ca, cert, key := pki.WriteFiles(t, dir, "api")
	p := startServe(t, []string{"--http-addr", "127.0.0.1:0", "--standalone", "--tls-cert", cert, "--tls-key", key}, nil)
	if !strings.Contains(p.log.String(), "tls=true") {
		t.Errorf("the listening line does not say tls=true:\n%s", p.log)
	}
	https := "https://" + p.Addr

	code, out, stderr := runToEnd(t, 30*time.Second, nil, "check", "--addr", https, "--ca-cert", ca, "auth", "ip:1")
	if code != exitOK || !strings.HasPrefix(out, "allowed") {
		t.Errorf("check over https with --ca-cert: exit %d, %s %s", code, out, stderr)
	}
	code, _, stderr = runToEnd(t, 30*time.Second, nil, "check", "--addr", https, "auth", "ip:1")
	if code != exitUsage || !strings.Contains(stderr, "certificate") {
		t.Errorf("check of a private CA's node without --ca-cert: exit %d, stderr %s", code, stderr)
	}
	code, _, stderr = runToEnd(t, 30*time.Second, nil, "check", "--addr", "http://"+p.Addr, "auth", "ip:1")
	if code != exitUsage {
		t.Errorf("plain http to the https API: exit %d, stderr %s", code, stderr)
	}
	code, out, stderr = runToEnd(t, 30*time.Second, nil, "policy", "list", "--addr", https, "--ca-cert", ca)
	if code != exitOK || !strings.Contains(out, "auth") {
		t.Errorf("policy list over https: exit %d, %s %s", code, out, stderr)
	}

	hc, err := nodeClient(5*time.Second, ca, os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(https + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Errorf("/healthz over https: %d, tls %v", resp.StatusCode, resp.TLS != nil)
	}

	js := filepath.Join(dir, "b.json")
	code, out, stderr = runBenchCmd(t, "--urls", https, "--ca-cert", ca, "--requests", "300", "--concurrency", "4",
		"--policy", "auth", "--keys", "10", "--progress", "none", "--json", js)
	if code != exitOK {
		t.Fatalf("bench over https: exit %d, %s %s", code, out, stderr)
	}
	// The policy was read over https too: the accounting knows auth's
	// limit of 10 a key.
	if r := readResultFile(t, js); r.Checks != 300 || r.Errors != 0 || r.Allowed != 100 || r.Accuracy.OverAdmitted != 0 || r.Accuracy.Keys != 10 {
		t.Errorf("bench over https: %d checks, %d errors %v, %d allowed, accuracy %+v", r.Checks, r.Errors, r.ErrorKinds, r.Allowed, r.Accuracy)
	}

	// A renewed certificate in the same files is served from the next
	// handshake after the node's once-a-second look, with no restart.
	served := func() string {
		conn, err := tls.Dial("tcp", p.Addr, &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := served()
	pki.WriteFiles(t, dir, "api")
	deadline := time.Now().Add(10 * time.Second)
	for served() == before {
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate was not served within 10 s; log:\n%s", p.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The line may reach the log reader just after the handshake that
	// served the new certificate.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(p.log.String(), "certificate reloaded"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("no reload logged within 5 s of the new certificate served:\n%s", p.log)
			break
		}
	}
	p.stop()

	code, _, stderr = runToEnd(t, 30*time.Second, nil, "serve", "--http-addr", "127.0.0.1:0", "--standalone", "--tls-cert", cert)
	if code != exitUsage || !strings.Contains(stderr, "go together") {
		t.Errorf("--tls-cert alone: exit %d, stderr:\n%s", code, stderr)
	}
	code, _, stderr = runToEnd(t, 30*time.Second, nil, "serve", "--http-addr", "127.0.0.1:0", "--standalone",
		"--tls-cert", filepath.Join(dir, "nope.pem"), "--tls-key", key)
	if code != exitUsage || !strings.Contains(stderr, "--tls-cert") {
		t.Errorf("a missing certificate: exit %d, stderr:\n%s", code, stderr)
	}
}
