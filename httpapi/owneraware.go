package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// OwnerAwareClient sends each check straight to the node that owns its
// key, as token-aware drivers of Cassandra do: one hop, where a check
// sent to any node costs that node a forward to the owner. It fetches the
// ring (GET /v1/ring) from Nodes, and fetches it again when an answer
// carries another ring version (RingHeader), at most once per
// MinRefresh. While its view is stale, a check may reach a node that
// no longer owns the key: that node forwards it to the owner, so the
// decision is the same, only a hop dearer. A check whose node refuses the
// connection (down: it never saw the check) is sent once more, through
// another node. Safe for concurrent use; the zero value is not usable:
// set Nodes.
type OwnerAwareClient struct {
	// Nodes are base URLs of cluster nodes ("http://10.0.0.1:8080"); any
	// one serves the ring, and checks go through them until it is known.
	// Members' addresses take the scheme of the first.
	Nodes []string
	// HTTPClient sends the requests. Default: http.DefaultClient.
	HTTPClient *http.Client
	// MinRefresh is the least time between two fetches of the ring.
	// Default: 100ms.
	MinRefresh time.Duration

	view       atomic.Pointer[clientRing]
	refreshing atomic.Bool
	mu         sync.Mutex // serializes fetches
	lastFetch  time.Time  // under mu
	next       atomic.Uint32
}

// clientRing is a fetched RingView, ready for lookups.
type clientRing struct {
	version string
	urls    []string // per member: its base URL, or "" (use Nodes)
	owners  []int
}

// ErrNoRing: no node answered GET /v1/ring.
var ErrNoRing = errors.New("httpapi: no node served the ring")

// Check sends a check to the owner of its key and returns the decision,
// as Client.Check does.
func (c *OwnerAwareClient) Check(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	if c.view.Load() == nil {
		_ = c.Refresh(ctx) // on failure, checks go through Nodes
	}
	base := c.ownerURL(policy, key)
	d, version, err := c.check(ctx, base, policy, key, hits)
	if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
		// The node is down and never saw the check: once more through
		// another node, which forwards it to the owner it knows.
		c.refreshSoon("")
		d, version, err = c.check(ctx, c.anyNode(base), policy, key, hits)
	}
	if err != nil {
		return bucket.Decision{}, err
	}
	if v := c.view.Load(); version != "" && (v == nil || v.version != version) {
		c.refreshSoon(base)
	}
	return d, nil
}

// Version returns the version of the ring the client routes by, or "".
func (c *OwnerAwareClient) Version() string {
	if v := c.view.Load(); v != nil {
		return v.version
	}
	return ""
}

// Refresh fetches the ring from the first node that serves it.
func (c *OwnerAwareClient) Refresh(ctx context.Context) error {
	return c.fetch(ctx, "")
}

// refreshSoon fetches the ring in the background, from first if set, unless
// a fetch is running or ran less than MinRefresh ago.
func (c *OwnerAwareClient) refreshSoon(first string) {
	if !c.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer c.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.mu.Lock()
		wait := c.minRefresh() - time.Since(c.lastFetch)
		c.mu.Unlock()
		if wait > 0 {
			time.Sleep(wait)
		}
		_ = c.fetch(ctx, first)
	}()
}

func (c *OwnerAwareClient) minRefresh() time.Duration {
	if c.MinRefresh > 0 {
		return c.MinRefresh
	}
	return 100 * time.Millisecond
}

// fetch reads the ring from first, else from each node in turn.
func (c *OwnerAwareClient) fetch(ctx context.Context, first string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastFetch = time.Now()
	bases := c.Nodes
	if first != "" {
		bases = append([]string{first}, c.Nodes...)
	}
	var last error = ErrNoRing
	for _, base := range bases {
		v, err := c.getRing(ctx, base)
		if err != nil {
			last = err
			continue
		}
		c.view.Store(v)
		return nil
	}
	return last
}

// maxRingBody bounds the ring's JSON (a 4,099-partition table of a few
// hundred members is well under it).
const maxRingBody = 4 << 20

func (c *OwnerAwareClient) getRing(ctx context.Context, base string) (*clientRing, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/v1/ring", nil)
	if err != nil {
		return nil, fmt.Errorf("httpapi: %w", err)
	}
	resp, err := c.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("httpapi: GET /v1/ring: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil, fmt.Errorf("%w: %s answered %d", ErrNoRing, base, resp.StatusCode)
	}
	var rv RingView
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxRingBody)).Decode(&rv); err != nil {
		return nil, fmt.Errorf("httpapi: GET /v1/ring: %w", err)
	}
	scheme := "http"
	if len(c.Nodes) > 0 {
		if u, err := url.Parse(c.Nodes[0]); err == nil && u.Scheme != "" {
			scheme = u.Scheme
		}
	}
	v := &clientRing{version: rv.Version, owners: rv.Owners, urls: make([]string, len(rv.Members))}
	for i, m := range rv.Members {
		if reachable(m.HTTPAddr) {
			v.urls[i] = scheme + "://" + m.HTTPAddr
		}
	}
	for _, o := range v.owners {
		if o < 0 || o >= len(v.urls) {
			return nil, fmt.Errorf("httpapi: GET /v1/ring: owner %d of %d members", o, len(v.urls))
		}
	}
	return v, nil
}

// reachable reports whether a member's advertised HTTP address can be
// dialled from elsewhere: a node listening on every interface advertises
// 0.0.0.0 or [::], which would reach the client's own host instead. Its
// keys go through Nodes, which forward them.
func reachable(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsUnspecified()
}

// ownerURL returns the base URL of the key's owner, or a node of Nodes
// when the ring is unknown or the owner advertises no address.
func (c *OwnerAwareClient) ownerURL(policy, key string) string {
	if v := c.view.Load(); v != nil {
		if i := ownerIndex(v.owners, policy, key); i >= 0 && v.urls[i] != "" {
			return v.urls[i]
		}
	}
	return c.anyNode("")
}

// anyNode returns a node of Nodes other than not, in turn.
func (c *OwnerAwareClient) anyNode(not string) string {
	if len(c.Nodes) == 0 {
		return not
	}
	for range len(c.Nodes) {
		b := c.Nodes[int(c.next.Add(1))%len(c.Nodes)]
		if b != not {
			return b
		}
	}
	return c.Nodes[0]
}

func (c *OwnerAwareClient) client() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return http.DefaultClient
}

// check sends one check to base and returns the decision and the ring
// version of the node that answered.
func (c *OwnerAwareClient) check(ctx context.Context, base, policy, key string, hits int64) (bucket.Decision, string, error) {
	if base == "" {
		return bucket.Decision{}, "", errors.New("httpapi: OwnerAwareClient: no Nodes")
	}
	body, err := json.Marshal(CheckRequest{Policy: policy, Key: key, Hits: hits})
	if err != nil {
		return bucket.Decision{}, "", fmt.Errorf("httpapi: encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+"/v1/check", bytes.NewReader(body))
	if err != nil {
		return bucket.Decision{}, "", fmt.Errorf("httpapi: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client().Do(req)
	if err != nil {
		return bucket.Decision{}, "", fmt.Errorf("httpapi: POST /v1/check: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusTooManyRequests {
		var e ErrorResponse
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return bucket.Decision{}, "", fmt.Errorf("httpapi: POST /v1/check: %d: %s", resp.StatusCode, e.Error)
		}
		return bucket.Decision{}, "", fmt.Errorf("httpapi: POST /v1/check: status %d", resp.StatusCode)
	}
	var cr CheckResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&cr); err != nil {
		return bucket.Decision{}, "", fmt.Errorf("httpapi: POST /v1/check: decode answer: %w", err)
	}
	if (resp.StatusCode == http.StatusOK) != cr.Allowed {
		return bucket.Decision{}, "", fmt.Errorf("httpapi: status %d with allowed=%v", resp.StatusCode, cr.Allowed)
	}
	return cr.Decision(), resp.Header.Get(RingHeader), nil
}
