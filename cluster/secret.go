package cluster

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ClusterKeySize is the length of a cluster key, in bytes.
const ClusterKeySize = 32

// clusterKeyFile is the file in DataDir that keeps a generated key.
const clusterKeyFile = "cluster.key"

// certLifetime is how long a node's self-issued certificate is valid; it
// is renewed at half its life. certSkew is how far back its validity
// starts, for peers whose clocks lag.
const (
	certLifetime = 24 * time.Hour
	certSkew     = 10 * time.Minute
)

// NewClusterKey returns a new random cluster key of ClusterKeySize bytes,
// read from r (nil: crypto/rand).
func NewClusterKey(r io.Reader) ([]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	k := make([]byte, ClusterKeySize)
	if _, err := io.ReadFull(r, k); err != nil {
		return nil, fmt.Errorf("cluster: new cluster key: %w", err)
	}
	return k, nil
}

// EncodeClusterKey returns the printable form of a cluster key: unpadded
// base64url, 43 characters, safe in a shell, a URL and a YAML file.
func EncodeClusterKey(key []byte) string {
	return base64.RawURLEncoding.EncodeToString(key)
}

// ParseClusterKey decodes the printable form of a cluster key (base64url,
// with or without padding; surrounding white space is ignored). The error
// never repeats the input, which is a secret.
func ParseClusterKey(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	k, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64url (generate one with `ratelimitd keygen`)", ErrBadClusterKey)
	}
	if len(k) != ClusterKeySize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrBadClusterKey, len(k), ClusterKeySize)
	}
	return k, nil
}

// Purposes of the keys derived from the cluster key. Each purpose has its
// own key, so that no key serves two: a gossip key cannot sign a
// certificate, and a certificate for the peer transport is refused by raft.
const (
	purposeGossip = "ratelimit/v1 gossip aes-256-gcm"
	purposePeer   = "ratelimit/v1 peer transport ca ed25519"
	purposeRaft   = "ratelimit/v1 raft ca ed25519"
)

// deriveKey derives the n-byte key of purpose from the cluster key with
// HKDF-SHA256.
func deriveKey(secret []byte, purpose string, n int) []byte {
	k, err := hkdf.Key(sha256.New, secret, nil, purpose, n)
	if err != nil {
		panic("cluster: hkdf: " + err.Error()) // only for n beyond 255*32
	}
	return k
}

// clusterCA is a certificate authority whose key is derived from the
// cluster key: every node holding the key can issue itself certificates,
// and accepts only peers whose certificate it signed.
type clusterCA struct {
	key     ed25519.PrivateKey
	pub     ed25519.PublicKey
	subject pkix.Name
}

func newClusterCA(secret []byte, purpose string) *clusterCA {
	key := ed25519.NewKeyFromSeed(deriveKey(secret, purpose, ed25519.SeedSize))
	return &clusterCA{
		key:     key,
		pub:     key.Public().(ed25519.PublicKey),
		subject: pkix.Name{Organization: []string{"ratelimit cluster"}, CommonName: purpose},
	}
}

// verify checks that a peer's leaf certificate was signed by the CA and is
// valid at now, and returns the peer's name (its CommonName).
func (ca *clusterCA) verify(rawCerts [][]byte, now time.Time) (string, error) {
	if len(rawCerts) == 0 {
		return "", errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	if leaf.SignatureAlgorithm != x509.PureEd25519 || !ed25519.Verify(ca.pub, leaf.RawTBSCertificate, leaf.Signature) {
		return "", errors.New("certificate not issued with the cluster key")
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return "", fmt.Errorf("certificate valid from %s to %s, not now", leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
	}
	if leaf.Subject.CommonName == "" {
		return "", errors.New("certificate names no node")
	}
	return leaf.Subject.CommonName, nil
}

// issuer holds a node's certificate for one purpose, issued by the node
// itself with the derived CA key, and renews it at half its life.
type issuer struct {
	ca   *clusterCA
	name string
	now  func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
}

// certificate returns the current certificate, issuing a new one when the
// last is past half its life.
func (is *issuer) certificate() (*tls.Certificate, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	now := is.now()
	if is.cert != nil && now.Before(is.renewAt) {
		return is.cert, nil
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"ratelimit cluster"}, CommonName: is.name},
		NotBefore:    now.Add(-certSkew),
		NotAfter:     now.Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	parent := &x509.Certificate{Subject: is.ca.subject, PublicKey: is.ca.pub}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, is.ca.key)
	if err != nil {
		return nil, fmt.Errorf("cluster: issue certificate: %w", err)
	}
	is.cert = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
	is.renewAt = now.Add(certLifetime / 2)
	return is.cert, nil
}

// keyTLS returns the TLS configuration, for both ends of a connection, of
// a node named name holding the cluster key, for one purpose: each end
// presents a certificate it issued itself and accepts only a peer whose
// certificate was issued with the same key for the same purpose. The
// chain is checked by VerifyPeerCertificate against the derived CA key
// rather than by a pool of roots (InsecureSkipVerify only turns off Go's
// check of a chain and host name that such a CA cannot have).
func keyTLS(secret []byte, purpose, name string, now func() time.Time) *tls.Config {
	ca := newClusterCA(secret, purpose)
	is := &issuer{ca: ca, name: name, now: now}
	verify := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		_, err := ca.verify(rawCerts, now())
		return err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return is.certificate()
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return is.certificate()
		},
		ClientAuth:             tls.RequireAnyClientCert,
		InsecureSkipVerify:     true, // see VerifyPeerCertificate
		VerifyPeerCertificate:  verify,
		SessionTicketsDisabled: true, // every connection proves the key afresh
	}
}

// loadOrCreateKey returns the key kept in dir, or, when there is none,
// generates one and keeps it there (mode 0600). With dir empty the new key
// lives in memory only. created reports a new key.
func loadOrCreateKey(dir string) (key []byte, created bool, err error) {
	if dir != "" {
		key, err = readKeyFile(dir)
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			return key, false, err
		}
	}
	key, err = NewClusterKey(nil)
	if err != nil {
		return nil, false, err
	}
	if dir == "" {
		return key, true, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("cluster: data dir: %w", err)
	}
	path := filepath.Join(dir, clusterKeyFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("cluster: keep the cluster key: %w", err)
	}
	_, err = f.WriteString(EncodeClusterKey(key) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, false, fmt.Errorf("cluster: keep the cluster key: %w", err)
	}
	return key, true, nil
}

// readKeyFile reads the key kept in dir.
func readKeyFile(dir string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, clusterKeyFile))
	if err != nil {
		return nil, err
	}
	k, err := ParseClusterKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, clusterKeyFile), err)
	}
	return k, nil
}

// isLoopback reports whether the host of a host:port address is a
// loopback address or "localhost". An empty host (all interfaces) is not.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// secrets are the credentials of a node's cluster ports.
type secrets struct {
	gossip    []byte      // memberlist's key; nil: gossip in the clear (Insecure)
	peer      *tls.Config // the peer transport's TLS; nil: plain TCP
	raft      *tls.Config // raft's TLS; nil: plain TCP
	generated bool        // this start generated ClusterKey
	named     bool        // peer certificates name their node (derived from the key)
}

// resolveClusterKey gives a node that needs a cluster key and has none the
// key kept in its DataDir or, when it starts a cluster (no Seeds, or
// Bootstrap) and create is set, a new one. It reports whether it
// generated the key.
func (c *Config) resolveClusterKey(create bool) (generated bool, err error) {
	if c.GossipAddr == "" || c.Insecure || len(c.ClusterKey) > 0 || c.ownCredentials() {
		return false, nil
	}
	if c.DataDir != "" {
		k, err := readKeyFile(c.DataDir)
		if err == nil {
			c.ClusterKey = k
			return false, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("cluster: cluster key: %w", err)
		}
	}
	if !create || !c.startsCluster() {
		return false, nil // a joiner without a key: Validate says ErrNoClusterKey
	}
	c.ClusterKey, generated, err = loadOrCreateKey(c.DataDir)
	return generated, err
}

// secrets returns the credentials of a node configured with c (defaults
// applied): SecretKey and PeerTLS when set, else those derived from
// ClusterKey.
func (c Config) secrets(now func() time.Time) secrets {
	s := secrets{gossip: c.SecretKey, peer: c.PeerTLS, raft: c.PeerTLS}
	if len(c.ClusterKey) == 0 {
		return s
	}
	if s.gossip == nil {
		s.gossip = deriveKey(c.ClusterKey, purposeGossip, 32)
	}
	if s.peer == nil {
		s.peer = keyTLS(c.ClusterKey, purposePeer, c.NodeName, now)
		s.raft = keyTLS(c.ClusterKey, purposeRaft, c.NodeName, now)
		s.named = true
	}
	return s
}

// ClusterKey returns the node's cluster key (configured, read from
// DataDir or generated) and whether this start generated it, so that a
// program can tell the operator the key the other nodes need. It is nil
// for a standalone node, an Insecure one and one with its own credentials.
func (n *Node) ClusterKey() (key []byte, generated bool) {
	return n.cfg.ClusterKey, n.sec.generated
}
