package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vibewell/ratelimit/bucket"
)

// Defaults for Options fields.
const (
	DefaultMaxBodyBytes = 1 << 20   // 1 MiB
	DefaultMaxBatch     = 1000      // checks per batch
	DefaultMaxKeyLen    = 512       // bytes; as cluster.DefaultMaxKeyLen
	DefaultMaxHits      = 1_000_000 // as cluster.DefaultMaxHits
)

// ErrInvalidOptions is wrapped by the errors NewHandler returns for bad
// Options.
var ErrInvalidOptions = errors.New("httpapi: invalid options")

// Options configures the handler of NewHandler. Zero fields take the
// default in their comment.
type Options struct {
	// Checker decides the checks. Required; *cluster.Node is one.
	Checker Checker
	// Gatherer is served on GET /metrics. Default: none, and /metrics
	// answers 404.
	Gatherer prometheus.Gatherer
	// Metrics is where the handler registers its own collectors (the
	// latency of check requests by endpoint). Default: none.
	Metrics prometheus.Registerer
	// Logger receives backend errors, at most one line a second. Default:
	// none.
	Logger *slog.Logger
	// MaxBodyBytes bounds a request body; a larger one is answered 413.
	// Default: 1 MiB.
	MaxBodyBytes int64
	// MaxBatch bounds the checks of one POST /v1/check/batch. Default: 1000.
	MaxBatch int
	// MaxKeyLen bounds a key, in bytes. Default: 512.
	MaxKeyLen int
	// MaxHits bounds the hits of one check. Default: 1,000,000.
	MaxHits int64

	// AdminToken turns the admin API on: the policy writes, and a bearer
	// token (Authorization: Bearer TOKEN) on every /v1/policies... endpoint
	// and /v1/cluster. Default: empty, and the writes answer 403 while the
	// reads stay public. Whoever builds the Options (ratelimitd serve) logs
	// that the admin API is off.
	AdminToken string
	// Admin changes the policy table. Default: the Checker, if it is a
	// PolicyAdmin (*cluster.Node is); with neither, writes answer 501.
	Admin PolicyAdmin
	// Status is served on GET /v1/cluster, as JSON; for a node, a func
	// returning node.Status(). Default: none, and /v1/cluster answers 404.
	Status func() any
	// Operator answers GET /v1/top, /v1/owner and /v1/overview (admin
	// API). Default: none, and they answer 404.
	Operator Operator
	// AdminTimeout bounds a policy write, so that a write without a raft
	// leader fails with a 503 rather than hang. Default: 10 s.
	AdminTimeout time.Duration
}

func (o Options) withDefaults() (Options, error) {
	bad := func(field string, v any) error {
		return fmt.Errorf("%w: %s must not be negative, got %v", ErrInvalidOptions, field, v)
	}
	switch {
	case o.Checker == nil:
		return o, fmt.Errorf("%w: Checker is required", ErrInvalidOptions)
	case o.MaxBodyBytes < 0:
		return o, bad("MaxBodyBytes", o.MaxBodyBytes)
	case o.MaxBatch < 0:
		return o, bad("MaxBatch", o.MaxBatch)
	case o.MaxKeyLen < 0:
		return o, bad("MaxKeyLen", o.MaxKeyLen)
	case o.MaxHits < 0:
		return o, bad("MaxHits", o.MaxHits)
	case o.AdminTimeout < 0:
		return o, bad("AdminTimeout", o.AdminTimeout)
	}
	if o.AdminTimeout == 0 {
		o.AdminTimeout = DefaultAdminTimeout
	}
	if o.Admin == nil {
		o.Admin, _ = o.Checker.(PolicyAdmin)
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxKeyLen == 0 {
		o.MaxKeyLen = DefaultMaxKeyLen
	}
	if o.MaxHits == 0 {
		o.MaxHits = DefaultMaxHits
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// handler serves the HTTP API.
type handler struct {
	opts    Options
	mux     *http.ServeMux
	errLog  *errorLog
	latency [numEndpoints]prometheus.Observer // nil entries: no metrics

	// tooLargeBodies and bodyTimeouts count the bodies refused by
	// MaxBodyBytes and by the server's read deadline.
	tooLargeBodies, bodyTimeouts prometheus.Counter

	tokenHash [sha256.Size]byte // of opts.AdminToken
}

// The endpoints whose latency is measured.
const (
	epCheck = iota
	epBatch
	epAuth
	numEndpoints
)

var endpointNames = [numEndpoints]string{"check", "batch", "auth"}

// NewHandler returns the HTTP API:
//
//	POST /v1/check        one check: 200 allowed, 429 denied
//	POST /v1/check/batch  up to Options.MaxBatch checks, answered in order
//	GET  /v1/auth         nginx auth_request: 204 allowed, 403 denied
//	GET  /v1/policies     the policy table
//	GET|PUT|DELETE /v1/policies/{name}               one policy (admin API)
//	PUT|DELETE     /v1/policies/{name}/overrides/{key} one key's limit (admin API)
//	GET  /v1/cluster      Options.Status (admin API)
//	GET  /healthz         200 while the process serves
//	GET  /readyz          200 when the Checker is ready, else 503
//	GET  /metrics         Options.Gatherer, in the Prometheus text format
//
// Errors are JSON ErrorResponse bodies. The handler is safe for concurrent
// use; it owns its ServeMux.
func NewHandler(opts Options) (http.Handler, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &handler{opts: opts, mux: http.NewServeMux(), errLog: newErrorLog(opts.Logger)}
	h.tokenHash = sha256.Sum256([]byte(opts.AdminToken))
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ratelimit", Subsystem: "http", Name: "bodies_refused_total",
		Help: "Request bodies refused, by limit: max_body_bytes (answered 413) or read_timeout (the server's read deadline passed while the body arrived).",
	}, []string{"limit"})
	h.tooLargeBodies = refused.WithLabelValues("max_body_bytes")
	h.bodyTimeouts = refused.WithLabelValues("read_timeout")
	if opts.Metrics != nil {
		if err := opts.Metrics.Register(refused); err != nil {
			return nil, fmt.Errorf("httpapi: register metrics: %w", err)
		}
		hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "ratelimit", Subsystem: "http", Name: "check_duration_seconds",
			Help:    "Time to answer a check request, by endpoint (check, batch, auth).",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16),
		}, []string{"endpoint"})
		if err := opts.Metrics.Register(hist); err != nil {
			return nil, fmt.Errorf("httpapi: register metrics: %w", err)
		}
		for i, name := range endpointNames {
			h.latency[i] = hist.WithLabelValues(name)
		}
	}
	h.route("POST", "/v1/check", h.check)
	h.route("POST", "/v1/check/batch", h.batch)
	// nginx's auth_request subrequest keeps the method of the original
	// request, so /v1/auth answers every method.
	h.mux.HandleFunc("/v1/auth", h.auth)
	h.adminRoutes()
	h.ringRoutes()
	h.operatorRoutes()
	h.route("GET", "/healthz", h.healthz)
	h.route("GET", "/readyz", h.readyz)
	if opts.Gatherer != nil {
		h.route("GET", "/metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}).ServeHTTP)
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &inputError{status: http.StatusNotFound, msg: "no such endpoint: " + r.URL.Path})
	})
	return h, nil
}

// route registers f for method and path, and a JSON 405 for the other
// methods on path.
func (h *handler) route(method, path string, f http.HandlerFunc) {
	h.mux.HandleFunc(method+" "+path, f)
	allow := method
	if method == "GET" {
		allow = "GET, HEAD"
	}
	h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, &inputError{status: http.StatusMethodNotAllowed, msg: fmt.Sprintf("method %s not allowed; use %s", r.Method, allow)})
	})
}

// ServeHTTP dispatches to the endpoints.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

var jsonContentType = []string{"application/json"}

// readBody reads the body into bufs.in, within MaxBodyBytes. The buffer
// grows as bytes arrive, never from the declared Content-Length, so a
// client that announces a large body and sends little holds little; the
// server's read deadline ends a client that sends too slowly.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request, bufs *buffers) *inputError {
	if r.ContentLength > h.opts.MaxBodyBytes {
		return h.tooLarge()
	}
	body := http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes)
	b := bufs.in[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			bufs.in = b
			return h.bodyError(err)
		}
	}
	bufs.in = b
	return nil
}

// bodyError answers an error reading a body: too large (413), too slow
// (408: the server's read deadline passed), or broken (400).
func (h *handler) bodyError(err error) *inputError {
	var (
		mb *http.MaxBytesError
		ne net.Error
	)
	switch {
	case errors.As(err, &mb):
		return h.tooLarge()
	case errors.As(err, &ne) && ne.Timeout():
		h.bodyTimeouts.Inc()
		return &inputError{status: http.StatusRequestTimeout, msg: "the body did not arrive within the server's read timeout"}
	}
	return badInput("", "reading the body: %v", err)
}

func (h *handler) tooLarge() *inputError {
	h.tooLargeBodies.Inc()
	return &inputError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body larger than %d bytes", h.opts.MaxBodyBytes)}
}

// validate checks a request and finds its policy.
func (h *handler) validate(r *CheckRequest) (bucket.Policy, *inputError) {
	switch {
	case r.Policy == "":
		return bucket.Policy{}, badInput("policy", "policy is required")
	case r.Key == "":
		return bucket.Policy{}, badInput("key", "key is required")
	case len(r.Key) > h.opts.MaxKeyLen:
		return bucket.Policy{}, badInput("key", "key is %d bytes, longer than %d", len(r.Key), h.opts.MaxKeyLen)
	case r.Hits < 0:
		return bucket.Policy{}, badInput("hits", "hits must not be negative, got %d", r.Hits)
	case r.Hits > h.opts.MaxHits:
		return bucket.Policy{}, badInput("hits", "hits must be at most %d, got %d", h.opts.MaxHits, r.Hits)
	}
	p, ok := h.opts.Checker.Policy(r.Policy)
	if !ok {
		return p, badInput("policy", "unknown policy %q", r.Policy)
	}
	return p, nil
}

// decide validates and decides one check. The error is an input error or a
// backend failure (status 503).
func (h *handler) decide(ctx context.Context, r *CheckRequest) (bucket.Policy, bucket.Decision, *inputError) {
	p, ierr := h.validate(r)
	if ierr != nil {
		return p, bucket.Decision{}, ierr
	}
	d, err := h.opts.Checker.Allow(ctx, r.Policy, r.Key, r.Hits)
	if err != nil {
		return p, d, h.backendError(ctx, r.Policy, err)
	}
	return p, d, nil
}

func (h *handler) backendError(ctx context.Context, policy string, err error) *inputError {
	if ctx.Err() == nil {
		h.errLog.log("check failed", "policy", policy, "err", err)
	}
	return &inputError{status: http.StatusServiceUnavailable, msg: "check failed: " + err.Error()}
}

func (h *handler) observe(ep int, start time.Time) {
	if o := h.latency[ep]; o != nil {
		o.Observe(time.Since(start).Seconds())
	}
}

func (h *handler) check(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer h.observe(epCheck, start)
	bufs := getBuffers()
	defer putBuffers(bufs)
	if ierr := h.readBody(w, r, bufs); ierr != nil {
		writeError(w, ierr)
		return
	}
	req, ierr := h.decodeCheck(r, bufs.in)
	if ierr != nil {
		writeError(w, ierr)
		return
	}
	p, d, ierr := h.decide(r.Context(), &req)
	if ierr != nil {
		writeError(w, ierr)
		return
	}
	hdr := w.Header()
	SetHeaders(hdr, &p, req.Key, d)
	h.setRingHeader(hdr)
	hdr["Content-Type"] = jsonContentType
	status := http.StatusOK
	if !d.Allowed {
		status = http.StatusTooManyRequests
	}
	w.WriteHeader(status)
	bufs.out = append(appendDecision(bufs.out, req.Policy, d), '}', '\n')
	_, _ = w.Write(bufs.out)
}

func (h *handler) batch(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer h.observe(epBatch, start)
	bufs := getBuffers()
	defer putBuffers(bufs)
	if ierr := h.readBody(w, r, bufs); ierr != nil {
		writeError(w, ierr)
		return
	}
	items, ierr := h.decodeBatch(r, bufs.in, bufs.items)
	if ierr != nil {
		writeError(w, ierr)
		return
	}
	bufs.items = items
	ctx := r.Context()
	if bc, ok := h.opts.Checker.(BatchChecker); ok {
		h.decideBatch(ctx, bc, items)
	} else {
		for i := range items {
			if it := &items[i]; it.err == nil {
				_, it.dec, it.err = h.decide(ctx, &it.req)
			}
		}
	}
	b := append(bufs.out, `{"results":[`...)
	for i := range items {
		it := &items[i]
		if i > 0 {
			b = append(b, ',')
		}
		if it.err == nil {
			b = append(appendDecision(b, it.req.Policy, it.dec), '}')
			continue
		}
		b = appendError(b, it.err, true)
	}
	bufs.out = append(b, "]}\n"...)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(bufs.out)
}

// BatchChecker is a Checker that decides many checks in one call, in
// fewer round trips (*cluster.Node is one). The batch endpoint uses it when
// the Checker has it.
type BatchChecker interface {
	// AllowBatch decides reqs[i] into out[i]; an error fails the whole
	// batch (see cluster.Node.AllowBatch).
	AllowBatch(ctx context.Context, reqs []bucket.Request, out []bucket.Result) error
}

// decideBatch validates every item, then decides the valid ones in one
// AllowBatch call.
func (h *handler) decideBatch(ctx context.Context, bc BatchChecker, items []batchItem) {
	reqs := make([]bucket.Request, 0, len(items))
	idx := make([]int, 0, len(items))
	for i := range items {
		it := &items[i]
		if it.err != nil {
			continue
		}
		if _, it.err = h.validate(&it.req); it.err != nil {
			continue
		}
		reqs = append(reqs, bucket.Request{Policy: it.req.Policy, Key: it.req.Key, Hits: it.req.Hits})
		idx = append(idx, i)
	}
	out := make([]bucket.Result, len(reqs))
	if err := bc.AllowBatch(ctx, reqs, out); err != nil {
		for _, i := range idx {
			items[i].err = h.backendError(ctx, items[i].req.Policy, err)
		}
		return
	}
	for j, i := range idx {
		if out[j].Err != nil {
			items[i].err = h.backendError(ctx, items[i].req.Policy, out[j].Err)
			continue
		}
		items[i].dec = out[j].Decision
	}
}

// auth serves nginx auth_request: 204 allowed, 403 denied, with the
// headers. Bad input is 400, which nginx turns into a 500 for its client.
func (h *handler) auth(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer h.observe(epAuth, start)
	q := r.URL.Query()
	req := CheckRequest{Policy: q.Get("policy"), Key: q.Get("key"), Hits: 1}
	if req.Policy == "" {
		req.Policy = r.Header.Get(HeaderAuthPolicy)
	}
	if req.Key == "" {
		req.Key = r.Header.Get(HeaderAuthKey)
	}
	if s := q.Get("hits"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			writeError(w, badInput("hits", "hits: want an integer, got %q", s))
			return
		}
		req.Hits = n
	}
	p, d, ierr := h.decide(r.Context(), &req)
	if ierr != nil {
		writeError(w, ierr)
		return
	}
	SetHeaders(w.Header(), &p, req.Key, d)
	if d.Allowed {
		w.WriteHeader(http.StatusNoContent)
	} else {
		w.WriteHeader(http.StatusForbidden)
	}
}

func (h *handler) policies(w http.ResponseWriter, r *http.Request) {
	ps := h.opts.Checker.Policies()
	if ps == nil {
		ps = []bucket.Policy{}
	}
	writeJSON(w, http.StatusOK, PoliciesResponse{Policies: ps})
}

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	if rd, ok := h.opts.Checker.(readier); ok && !rd.Ready() {
		writeJSON(w, http.StatusServiceUnavailable, ErrorResponse{Error: "not ready"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, &inputError{status: http.StatusInternalServerError, msg: "encoding the answer: " + err.Error()})
		return
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, e *inputError) {
	var arr [256]byte
	b := append(appendError(arr[:0], e, false), '\n')
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h.Del(HeaderRetryAfter)
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// decodeCheck decodes a check body by its Content-Type: msgpack for
// application/msgpack (or x-msgpack), else JSON, which is also assumed when
// the type is missing or unknown (curl -d sends a form type).
func (h *handler) decodeCheck(r *http.Request, b []byte) (CheckRequest, *inputError) {
	if isMsgpack(r) {
		return decodeCheckMsgpack(b)
	}
	return decodeCheck(b)
}

func (h *handler) decodeBatch(r *http.Request, b []byte, items []batchItem) ([]batchItem, *inputError) {
	if isMsgpack(r) {
		return decodeBatchMsgpack(b, items, h.opts.MaxBatch)
	}
	return decodeBatch(b, items, h.opts.MaxBatch)
}

func isMsgpack(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/msgpack") || strings.HasPrefix(ct, "application/x-msgpack")
}
