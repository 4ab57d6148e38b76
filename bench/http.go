package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/httpapi"
)

// HTTPConfig configures an HTTP target.
type HTTPConfig struct {
	// URLs are the base URLs of the nodes, e.g. "http://127.0.0.1:8080".
	// Checks go to them round-robin. Required.
	URLs []string
	// Conns is the number of connections kept open to each node; set it to
	// the run's concurrency. Default: 64.
	Conns int
	// Timeout bounds the wait for each answer. Default: 5 s.
	Timeout time.Duration
	// StdClient sends through net/http's client instead of the bench's own
	// HTTP/1.1 connections (which https URLs always use). It costs the load
	// generator about twice the CPU a check.
	StdClient bool
	// TLS is the client configuration of https URLs, e.g. the RootCAs of a
	// private CA. Default: the system's roots.
	TLS *tls.Config
	// OwnerAware sends each single check to its key's owner, from the ring
	// a node serves (GET /v1/ring), as httpapi.OwnerAwareClient does; the
	// ring is read at the start and when SetURLs changes the nodes.
	// Batches, and keys whose owner is not among URLs, go round-robin.
	OwnerAware bool
	// Transport replaces the tuned transport of StdClient (tests). Default:
	// an http.Transport with Conns idle connections per host, no
	// compression, HTTP/1.1.
	Transport http.RoundTripper
}

// HTTP is a Target on the HTTP check API of one or more nodes
// (POST /v1/check and /v1/check/batch). It encodes request bodies into
// reused buffers and scans answers without reflection, so that the load
// generator costs little beside the server it measures. It is safe for
// concurrent use.
type HTTP struct {
	client *http.Client
	conns  int
	raw    bool
	tmo    time.Duration
	nodes  atomic.Pointer[[]httpNode]
	route  atomic.Pointer[ownerRoute] // OwnerAware: the ring, nil until read
	owner  bool
	next   atomic.Uint64
	bufs   sync.Pool
	header http.Header
}

var _ BatchTarget = (*HTTP)(nil)

type httpNode struct {
	base  string
	check *url.URL
	batch *url.URL
	pool  *rawPool // nil: net/http
}

// NewHTTP returns a target on the nodes at cfg.URLs.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	if cfg.Conns <= 0 {
		cfg.Conns = DefaultConcurrency
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	tr := cfg.Transport
	if tr == nil {
		tr = &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          cfg.Conns * max(len(cfg.URLs), 1) * 2,
			MaxIdleConnsPerHost:   cfg.Conns,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: cfg.Timeout,
			DisableCompression:    true,
			ForceAttemptHTTP2:     false,
			TLSClientConfig:       cfg.TLS,
		}
	}
	h := &HTTP{
		owner:  cfg.OwnerAware,
		conns:  cfg.Conns,
		raw:    !cfg.StdClient && cfg.Transport == nil,
		tmo:    cfg.Timeout,
		client: &http.Client{Transport: tr},
		header: http.Header{"Content-Type": {"application/json"}},
	}
	h.bufs.New = func() any { return &httpBuf{} }
	if err := h.SetURLs(cfg.URLs); err != nil {
		return nil, err
	}
	return h, nil
}

// SetURLs replaces the nodes checks go to (a node added or removed).
func (h *HTTP) SetURLs(urls []string) error {
	if len(urls) == 0 {
		return fmt.Errorf("%w: no URLs", ErrConfig)
	}
	old := map[string]*rawPool{}
	if cur := h.nodes.Load(); cur != nil {
		for _, n := range *cur {
			old[n.base] = n.pool
		}
	}
	nodes := make([]httpNode, len(urls))
	for i, u := range urls {
		base := strings.TrimRight(u, "/")
		c, err := url.Parse(base + "/v1/check")
		if err != nil || c.Host == "" || (c.Scheme != "http" && c.Scheme != "https") {
			return fmt.Errorf("%w: bad URL %q", ErrConfig, u)
		}
		b, _ := url.Parse(base + "/v1/check/batch")
		nodes[i] = httpNode{base: base, check: c, batch: b}
		if h.raw && c.Scheme == "http" {
			if p := old[base]; p != nil {
				nodes[i].pool = p
			} else {
				nodes[i].pool = newRawPool(c, h.conns, h.tmo)
			}
		}
	}
	h.nodes.Store(&nodes)
	if h.owner {
		return h.readRing(nodes)
	}
	return nil
}

// ownerRoute is a ring read from a node: per partition, the index in nodes
// of its owner, or -1.
type ownerRoute struct {
	nodes  []httpNode
	owners []int
}

// readRing reads the ring from the first node that serves it.
func (h *HTTP) readRing(nodes []httpNode) error {
	var last error
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), h.tmo)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.base+"/v1/ring", nil)
		resp, err := h.client.Do(req)
		if err != nil {
			cancel()
			last = err
			continue
		}
		var rv httpapi.RingView
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&rv)
		resp.Body.Close()
		cancel()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s/v1/ring: status %d", n.base, resp.StatusCode)
		}
		if err != nil {
			last = err
			continue
		}
		byMember := make([]int, len(rv.Members))
		for i, m := range rv.Members {
			byMember[i] = -1
			for j, nd := range nodes {
				if m.HTTPAddr != "" && nd.check.Host == m.HTTPAddr {
					byMember[i] = j
				}
			}
		}
		owners := make([]int, len(rv.Owners))
		for p, o := range rv.Owners {
			owners[p] = -1
			if o >= 0 && o < len(byMember) {
				owners[p] = byMember[o]
			}
		}
		h.route.Store(&ownerRoute{nodes: nodes, owners: owners})
		return nil
	}
	return fmt.Errorf("bench: owner-aware: no node served its ring: %w", last)
}

// pickOwner returns the node that owns policy's key, or the next node.
func (h *HTTP) pickOwner(policy, key string) *httpNode {
	if rt := h.route.Load(); rt != nil {
		v := httpapi.RingView{Owners: rt.owners}
		if i := v.Owner(policy, key); i >= 0 {
			return &rt.nodes[i]
		}
	}
	return h.pick()
}

// URLs returns the nodes' base URLs.
func (h *HTTP) URLs() []string {
	nodes := *h.nodes.Load()
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.base
	}
	return out
}

func (h *HTTP) pick() *httpNode {
	nodes := *h.nodes.Load()
	if len(nodes) == 1 {
		return &nodes[0]
	}
	return &nodes[h.next.Add(1)%uint64(len(nodes))]
}

type httpBuf struct {
	body []byte
	resp []byte
	rd   bytes.Reader
}

// do posts body to u of node n and reads the answer into buf.resp.
func (h *HTTP) do(ctx context.Context, n *httpNode, u *url.URL, buf *httpBuf) (int, error) {
	if n.pool != nil {
		status, resp, err := n.pool.post(ctx, u.Path, buf.body, buf.resp)
		buf.resp = resp
		return status, err
	}
	buf.rd.Reset(buf.body)
	req := (&http.Request{
		Method:        http.MethodPost,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h.header,
		Body:          io.NopCloser(&buf.rd),
		ContentLength: int64(len(buf.body)),
		Host:          u.Host,
	}).WithContext(ctx)
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	buf.resp, err = readAll(resp.Body, buf.resp[:0])
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// readAll appends the rest of r to b.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// Check posts one check to the next node.
func (h *HTTP) Check(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	buf := h.bufs.Get().(*httpBuf)
	defer h.bufs.Put(buf)
	buf.body = appendCheck(buf.body[:0], policy, key, hits)
	n := h.pick()
	if h.owner {
		n = h.pickOwner(policy, key)
	}
	status, err := h.do(ctx, n, n.check, buf)
	if err != nil {
		return bucket.Decision{}, err
	}
	if status != http.StatusOK && status != http.StatusTooManyRequests {
		return bucket.Decision{}, statusError(status, buf.resp)
	}
	var r result
	if _, err := scanObject(buf.resp, 0, r.field); err != nil {
		return bucket.Decision{}, &kindError{kind: "bad_answer", err: err}
	}
	return r.decision(), nil
}

// CheckBatch posts the checks as one batch to the next node.
func (h *HTTP) CheckBatch(ctx context.Context, checks []Check, out []Outcome) error {
	buf := h.bufs.Get().(*httpBuf)
	defer h.bufs.Put(buf)
	b := append(buf.body[:0], `{"checks":[`...)
	for i, c := range checks {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendCheck(b, c.Policy, c.Key, c.Hits)
	}
	buf.body = append(b, "]}"...)
	n := h.pick()
	status, err := h.do(ctx, n, n.batch, buf)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return statusError(status, buf.resp)
	}
	got, err := scanResults(buf.resp, out[:len(checks)])
	if err == nil && got != len(checks) {
		err = fmt.Errorf("bench: batch of %d checks answered with %d results", len(checks), got)
	}
	if err != nil {
		return &kindError{kind: "bad_answer", err: err}
	}
	return nil
}

// Close closes idle connections.
func (h *HTTP) Close(context.Context) error {
	h.client.CloseIdleConnections()
	for _, n := range *h.nodes.Load() {
		if n.pool != nil {
			n.pool.close()
		}
	}
	return nil
}

// statusError is an answer that is not a decision.
func statusError(status int, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(body[:min(len(body), 200)]))
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	return &kindError{kind: "http_" + strconv.Itoa(status), err: fmt.Errorf("bench: status %d: %s", status, msg)}
}

// appendCheck appends the JSON of one check.
func appendCheck(b []byte, policy, key string, hits int64) []byte {
	b = append(b, `{"policy":`...)
	b = appendJSONString(b, policy)
	b = append(b, `,"key":`...)
	b = appendJSONString(b, key)
	b = append(b, `,"hits":`...)
	b = strconv.AppendInt(b, hits, 10)
	return append(b, '}')
}

// plainJSON marks the bytes a JSON string holds as they are.
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	n := len(b)
	b = append(append(b, '"'), s...)
	for _, c := range b[n+1:] {
		if !plainJSON[c] {
			q, _ := json.Marshal(s)
			return append(b[:n], q...)
		}
	}
	return append(b, '"')
}

// result gathers the fields of one decision object.
type result struct {
	allowed                  bool
	limit, remaining         int64
	resetMS, retryMS, status int64
	errMsg                   string
	hasErr                   bool
}

func (r *result) field(key, val []byte) {
	switch string(key) {
	case "allowed":
		r.allowed = string(val) == "true"
	case "limit":
		r.limit, _ = strconv.ParseInt(string(val), 10, 64)
	case "remaining":
		r.remaining, _ = strconv.ParseInt(string(val), 10, 64)
	case "reset_after_ms":
		r.resetMS, _ = strconv.ParseInt(string(val), 10, 64)
	case "retry_after_ms":
		r.retryMS, _ = strconv.ParseInt(string(val), 10, 64)
	case "status":
		r.status, _ = strconv.ParseInt(string(val), 10, 64)
	case "error":
		r.hasErr = true
		r.errMsg = strings.Trim(string(val), `"`)
	}
}

func (r *result) decision() bucket.Decision {
	return bucket.Decision{
		Allowed:    r.allowed,
		Limit:      r.limit,
		Remaining:  r.remaining,
		ResetAfter: time.Duration(r.resetMS) * time.Millisecond,
		RetryAfter: time.Duration(r.retryMS) * time.Millisecond,
	}
}

// scanResults reads the results of a batch answer into out and returns
// how many there were.
func scanResults(b []byte, out []Outcome) (int, error) {
	n := 0
	var inner error
	_, err := scanObject(b, 0, func(key, val []byte) {
		if string(key) != "results" || inner != nil {
			return
		}
		i := skipWS(val, 0)
		if i >= len(val) || val[i] != '[' {
			inner = errors.New("bench: results is not an array")
			return
		}
		i = skipWS(val, i+1)
		for i < len(val) && val[i] != ']' {
			var r result
			j, err := scanObject(val, i, r.field)
			if err != nil {
				inner = err
				return
			}
			if n < len(out) {
				if r.hasErr {
					kind := "check_error"
					if r.status > 0 {
						kind = "http_" + strconv.FormatInt(r.status, 10)
					}
					out[n] = Outcome{Err: &kindError{kind: kind, err: errors.New("bench: " + r.errMsg)}}
				} else {
					out[n] = Outcome{Decision: r.decision()}
				}
			}
			n++
			i = skipWS(val, j)
			if i < len(val) && val[i] == ',' {
				i = skipWS(val, i+1)
			}
		}
	})
	if err == nil {
		err = inner
	}
	return n, err
}

// The scanner below reads the flat JSON objects of the check API: it hands
// each member's key and raw value to a callback. It checks structure only
// as far as it needs to find its way.

var errSyntax = errors.New("bench: malformed JSON answer")

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// scanObject scans the object at b[i:] and returns the index after it.
func scanObject(b []byte, i int, member func(key, val []byte)) (int, error) {
	i = skipWS(b, i)
	if i >= len(b) || b[i] != '{' {
		return i, errSyntax
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, errSyntax
		}
		end, err := skipValue(b, i)
		if err != nil {
			return i, err
		}
		key := b[i+1 : end-1]
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return i, errSyntax
		}
		i = skipWS(b, i+1)
		end, err = skipValue(b, i)
		if err != nil {
			return i, err
		}
		member(key, b[i:end])
		i = skipWS(b, end)
		if i >= len(b) {
			return i, errSyntax
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return i, errSyntax
		}
	}
}

// skipValue returns the index after the JSON value at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return i, errSyntax
	}
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); {
			k := bytes.IndexByte(b[j:], '"')
			if k < 0 {
				break
			}
			j += k
			// The quote ends the string unless an odd run of backslashes
			// escapes it.
			bs := 0
			for bs < j-i-1 && b[j-1-bs] == '\\' {
				bs++
			}
			if bs%2 == 0 {
				return j + 1, nil
			}
			j++
		}
		return len(b), errSyntax
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := skipValue(b, j)
				if err != nil {
					return end, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return len(b), errSyntax
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\r' && b[j] != '\t' {
		j++
	}
	if j == i {
		return i, errSyntax
	}
	return j, nil
}

// FetchPolicy asks the node at baseURL for the named policy
// (GET /v1/policies), for the accuracy accounting of an HTTP run.
func FetchPolicy(ctx context.Context, client *http.Client, baseURL, name string) (*bucket.Policy, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(baseURL, "/")+"/v1/policies", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: fetch policies: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: fetch policies: status %d", resp.StatusCode)
	}
	var body struct {
		Policies []bucket.Policy `json:"policies"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("bench: fetch policies: %w", err)
	}
	for i := range body.Policies {
		if body.Policies[i].Name == name {
			return &body.Policies[i], nil
		}
	}
	return nil, fmt.Errorf("bench: node %s has no policy %q", baseURL, name)
}
