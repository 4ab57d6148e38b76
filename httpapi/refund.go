package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/bucket"
)

// Refunder is a Checker that gives hits back and resets counters
// (*cluster.Node is one). The reset and refund endpoints need it; a
// Request's Hits of bucket.RefundAll resets its counter.
type Refunder interface {
	// RefundBatch makes reqs[i] into out[i]; an error fails the whole
	// batch (see cluster.Node.RefundBatch).
	RefundBatch(ctx context.Context, reqs []bucket.Request, out []bucket.Result) error
}

// ResetRequest names one counter to reset: the body of POST /v1/reset and
// an item of POST /v1/reset/batch.
type ResetRequest struct {
	Policy string `json:"policy"` // the policy, e.g. "auth"
	Key    string `json:"key"`    // the key, e.g. "user:42"
}

// RefundRequest gives hits back to one counter: the body of POST
// /v1/refund and an item of POST /v1/refund/batch.
type RefundRequest struct {
	Policy string `json:"policy"` // the policy, e.g. "auth"
	Key    string `json:"key"`    // the key, e.g. "user:42"
	// Hits is how many hits to give back, 1 to Options.MaxHits; omitted in
	// a request body, it is 1.
	Hits int64 `json:"hits"`
}

// ResetBatchRequest is the body of POST /v1/reset/batch.
type ResetBatchRequest struct {
	Resets []ResetRequest `json:"resets"` // at most Options.MaxBatch
}

// RefundBatchRequest is the body of POST /v1/refund/batch.
type RefundBatchRequest struct {
	Refunds []RefundRequest `json:"refunds"` // at most Options.MaxBatch
}

// errRefundOff is the answer to a reset or refund while neither token is
// set.
const errRefundOff = "reset and refund are off: set --client-token / RATELIMIT_CLIENT_TOKEN (or --admin-token)"

// refundRoutes registers the reset and refund endpoints and the counter of
// the calls they refuse.
func (h *handler) refundRoutes() error {
	h.clientHash = sha256.Sum256([]byte(h.opts.ClientToken))
	h.refundRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ratelimit", Subsystem: "http", Name: "refund_refused_total",
		Help: "Reset and refund requests refused for a missing or wrong token.",
	})
	if h.opts.Metrics != nil {
		if err := h.opts.Metrics.Register(h.refundRefused); err != nil {
			return fmt.Errorf("httpapi: register metrics: %w", err)
		}
	}
	h.route("POST", "/v1/reset", h.mayRefund(h.reset))
	h.route("POST", "/v1/reset/batch", h.mayRefund(h.resetBatch))
	h.route("POST", "/v1/refund", h.mayRefund(h.refund))
	h.route("POST", "/v1/refund/batch", h.mayRefund(h.refundBatch))
	return nil
}

// mayRefund guards a reset or refund endpoint. A reset lifts a limit, so
// it needs more than reaching the API (which nginx's auth_request does for
// anyone): the bearer token of Options.ClientToken or AdminToken. Without
// either set, the endpoints are off. A caller without the right gets 403,
// is counted and logged (capped), and nothing changes.
func (h *handler) mayRefund(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.opts.ClientToken == "" && h.opts.AdminToken == "" {
			h.refundRefused.Inc()
			writeError(w, &inputError{status: http.StatusForbidden, msg: errRefundOff})
			return
		}
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			got := sha256.Sum256([]byte(strings.TrimSpace(token)))
			client := h.opts.ClientToken != "" && subtle.ConstantTimeCompare(got[:], h.clientHash[:]) == 1
			admin := h.opts.AdminToken != "" && subtle.ConstantTimeCompare(got[:], h.tokenHash[:]) == 1
			if client || admin {
				f(w, r)
				return
			}
		}
		h.refundRefused.Inc()
		h.errLog.Log("reset or refund refused: missing or wrong token", "path", r.URL.Path, "remote", r.RemoteAddr)
		writeError(w, &inputError{status: http.StatusForbidden,
			msg: "reset and refund need the client token or the admin token (Authorization: Bearer TOKEN)"})
	}
}

// refundItem is one reset or refund of a request, validated.
type refundItem struct {
	req RefundRequest // Hits is bucket.RefundAll for a reset
	err *inputError
	dec bucket.Decision
}

// refundBody is RefundRequest as decoded, to tell an omitted hits.
type refundBody struct {
	Policy string `json:"policy"`
	Key    string `json:"key"`
	Hits   *int64 `json:"hits"`
}

func (b refundBody) request() RefundRequest {
	r := RefundRequest{Policy: b.Policy, Key: b.Key, Hits: 1}
	if b.Hits != nil {
		r.Hits = *b.Hits
	}
	return r
}

func (h *handler) reset(w http.ResponseWriter, r *http.Request) {
	var in ResetRequest
	if !h.decodeRefundBody(w, r, &in) {
		return
	}
	h.answerOne(w, r, refundItem{req: RefundRequest{Policy: in.Policy, Key: in.Key, Hits: bucket.RefundAll}})
}

func (h *handler) refund(w http.ResponseWriter, r *http.Request) {
	var in refundBody
	if !h.decodeRefundBody(w, r, &in) {
		return
	}
	h.answerOne(w, r, refundItem{req: in.request()})
}

func (h *handler) resetBatch(w http.ResponseWriter, r *http.Request) {
	var in ResetBatchRequest
	if !h.decodeRefundBody(w, r, &in) {
		return
	}
	if ierr := h.checkBatchLen(len(in.Resets), "resets"); ierr != nil {
		writeError(w, ierr)
		return
	}
	items := make([]refundItem, len(in.Resets))
	for i, rs := range in.Resets {
		items[i].req = RefundRequest{Policy: rs.Policy, Key: rs.Key, Hits: bucket.RefundAll}
	}
	h.answerBatch(w, r, items)
}

func (h *handler) refundBatch(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Refunds []refundBody `json:"refunds"`
	}
	if !h.decodeRefundBody(w, r, &in) {
		return
	}
	if ierr := h.checkBatchLen(len(in.Refunds), "refunds"); ierr != nil {
		writeError(w, ierr)
		return
	}
	items := make([]refundItem, len(in.Refunds))
	for i, rb := range in.Refunds {
		items[i].req = rb.request()
	}
	h.answerBatch(w, r, items)
}

func (h *handler) checkBatchLen(n int, field string) *inputError {
	if n > h.opts.MaxBatch {
		return badInput(field, "%d items, at most %d", n, h.opts.MaxBatch)
	}
	return nil
}

// decodeRefundBody reads and strictly decodes a body into v, answering
// the error itself.
func (h *handler) decodeRefundBody(w http.ResponseWriter, r *http.Request, v any) bool {
	b, ierr := h.readAdminBody(w, r)
	if ierr == nil {
		ierr = decodeStrict(b, v, refundFields(v)...)
	}
	if ierr != nil {
		writeError(w, ierr)
		return false
	}
	return true
}

// refundFields are the JSON field names of the struct v points to, which
// decodeStrict refuses in another case or twice.
func refundFields(v any) []string {
	t := reflect.TypeOf(v).Elem()
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// validateRefund checks one item's fields and policy.
func (h *handler) validateRefund(r *RefundRequest) *inputError {
	switch {
	case r.Policy == "":
		return badInput("policy", "policy is required")
	case r.Key == "":
		return badInput("key", "key is required")
	case len(r.Key) > h.opts.MaxKeyLen:
		return badInput("key", "key is %d bytes, longer than %d", len(r.Key), h.opts.MaxKeyLen)
	case r.Hits == bucket.RefundAll:
	case r.Hits < 1 || r.Hits > h.opts.MaxHits:
		return badInput("hits", "hits to give back must be 1 to %d, got %d", h.opts.MaxHits, r.Hits)
	}
	if _, ok := h.opts.Checker.Policy(r.Policy); !ok {
		return badInput("policy", "unknown policy %q", r.Policy)
	}
	return nil
}

// decideRefunds validates items and makes the valid ones in one
// RefundBatch call.
func (h *handler) decideRefunds(ctx context.Context, items []refundItem) *inputError {
	rf, ok := h.opts.Checker.(Refunder)
	if !ok {
		return &inputError{status: http.StatusNotImplemented, msg: "this node cannot reset or refund counters"}
	}
	reqs := make([]bucket.Request, 0, len(items))
	idx := make([]int, 0, len(items))
	for i := range items {
		it := &items[i]
		if it.err = h.validateRefund(&it.req); it.err != nil {
			continue
		}
		reqs = append(reqs, bucket.Request{Policy: it.req.Policy, Key: it.req.Key, Hits: it.req.Hits})
		idx = append(idx, i)
	}
	out := make([]bucket.Result, len(reqs))
	if err := rf.RefundBatch(ctx, reqs, out); err != nil {
		return h.refundError(ctx, "", err)
	}
	for j, i := range idx {
		if out[j].Err != nil {
			items[i].err = h.refundError(ctx, items[i].req.Policy, out[j].Err)
			continue
		}
		items[i].dec = out[j].Decision
	}
	return nil
}

// refundError maps a Refunder's error to an answer: bad input is 400,
// anything else 503 (logged, capped).
func (h *handler) refundError(ctx context.Context, policy string, err error) *inputError {
	switch {
	case errors.Is(err, bucket.ErrUnknownPolicy):
		return badInput("policy", "%s", err.Error())
	case errors.Is(err, bucket.ErrInvalidKey):
		return badInput("key", "%s", err.Error())
	case errors.Is(err, bucket.ErrInvalidHits):
		return badInput("hits", "%s", err.Error())
	}
	if ctx.Err() == nil {
		h.errLog.Log("refund failed", "policy", policy, "err", err)
	}
	return &inputError{status: http.StatusServiceUnavailable, msg: "refund failed: " + err.Error()}
}

func (h *handler) answerOne(w http.ResponseWriter, r *http.Request, it refundItem) {
	items := []refundItem{it}
	if ierr := h.decideRefunds(r.Context(), items); ierr != nil {
		writeError(w, ierr)
		return
	}
	if items[0].err != nil {
		writeError(w, items[0].err)
		return
	}
	b := append(appendDecision(nil, it.req.Policy, items[0].dec), '}', '\n')
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func (h *handler) answerBatch(w http.ResponseWriter, r *http.Request, items []refundItem) {
	if ierr := h.decideRefunds(r.Context(), items); ierr != nil {
		writeError(w, ierr)
		return
	}
	b := append([]byte(nil), `{"results":[`...)
	for i := range items {
		if i > 0 {
			b = append(b, ',')
		}
		if it := &items[i]; it.err == nil {
			b = append(appendDecision(b, it.req.Policy, it.dec), '}')
		} else {
			b = appendError(b, it.err, true)
		}
	}
	b = append(b, "]}\n"...)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
