package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// DefaultAdminTimeout bounds a write of the admin API: the time to commit
// a change, forwarded to the raft leader when needed.
const DefaultAdminTimeout = 10 * time.Second

// PolicyAdmin changes the policy table. *cluster.Node satisfies it. Each
// method returns once the change is applied on the node it was called on.
//
// Errors that wrap bucket.ErrInvalidPolicy (a *bucket.FieldError names the
// JSON field) are answered 400; bucket.ErrUnknownPolicy and
// bucket.ErrUnknownOverride 404; bucket.ErrPolicyInUse 409; any other error (no leader in time, a
// closed node) 503.
type PolicyAdmin interface {
	// SetPolicy adds or replaces a policy, overrides included.
	SetPolicy(ctx context.Context, p bucket.Policy) error
	// DeletePolicy removes the named policy.
	DeletePolicy(ctx context.Context, name string) error
	// SetOverride sets the limit of one key under a policy.
	SetOverride(ctx context.Context, policy, key string, limit int64) error
	// DeleteOverride removes the override of one key.
	DeleteOverride(ctx context.Context, policy, key string) error
}

// ForceDeleter is a PolicyAdmin that can delete a built-in policy other
// components depend on, which DeletePolicy refuses with an error wrapping
// bucket.ErrPolicyInUse (answered 409). *cluster.Node is one. DELETE
// /v1/policies/{name}?force=true uses it.
type ForceDeleter interface {
	ForceDeletePolicy(ctx context.Context, name string) error
}

// errAdminOff is the message of a write while Options.AdminToken is empty.
const errAdminOff = "admin API disabled: set --admin-token / RATELIMIT_ADMIN_TOKEN"

// adminRoutes registers the policy and cluster endpoints.
func (h *handler) adminRoutes() {
	h.route("GET", "/v1/policies", h.read(h.policies))
	h.routes("/v1/policies/{name}", map[string]http.HandlerFunc{
		"GET":    h.read(h.getPolicy),
		"PUT":    h.write(h.putPolicy),
		"DELETE": h.write(h.deletePolicy),
	})
	h.routes("/v1/policies/{name}/overrides/{key}", map[string]http.HandlerFunc{
		"PUT":    h.write(h.putOverride),
		"DELETE": h.write(h.deleteOverride),
	})
	h.route("GET", "/v1/cluster", h.read(h.cluster))
}

// routes registers a handler per method for path, and a JSON 405 for the
// other methods on path.
func (h *handler) routes(path string, byMethod map[string]http.HandlerFunc) {
	var allow []string
	for _, m := range []string{"GET", "PUT", "DELETE"} {
		if f, ok := byMethod[m]; ok {
			h.mux.HandleFunc(m+" "+path, f)
			allow = append(allow, m)
			if m == "GET" {
				allow = append(allow, "HEAD")
			}
		}
	}
	allowed := strings.Join(allow, ", ")
	h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allowed)
		writeError(w, &inputError{status: http.StatusMethodNotAllowed, msg: fmt.Sprintf("method %s not allowed; use %s", r.Method, allowed)})
	})
}

// read guards a read endpoint: public without a token, else it needs the
// token.
func (h *handler) read(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.opts.AdminToken != "" && !h.authorized(w, r) {
			return
		}
		f(w, r)
	}
}

// write guards a write endpoint: off without a token or a PolicyAdmin,
// else it needs the token.
func (h *handler) write(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.opts.AdminToken == "" {
			writeError(w, &inputError{status: http.StatusForbidden, msg: errAdminOff})
			return
		}
		if !h.authorized(w, r) {
			return
		}
		if h.opts.Admin == nil {
			writeError(w, &inputError{status: http.StatusNotImplemented, msg: "admin API: this node's policy table cannot be changed"})
			return
		}
		f(w, r)
	}
}

// authorized checks the bearer token, in constant time, and answers 401 if
// it is missing or wrong.
func (h *handler) authorized(w http.ResponseWriter, r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(auth, " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		// Comparing digests keeps the token's length secret too.
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if subtle.ConstantTimeCompare(got[:], h.tokenHash[:]) == 1 {
			return true
		}
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="ratelimit"`)
	msg := "admin API: missing bearer token (Authorization: Bearer TOKEN)"
	if auth != "" {
		msg = "admin API: wrong bearer token"
	}
	writeError(w, &inputError{status: http.StatusUnauthorized, msg: msg})
	return false
}

func (h *handler) getPolicy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p, ok := h.opts.Checker.Policy(name)
	if !ok {
		writeError(w, unknownPolicy(name))
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// putPolicy adds or replaces the policy of the path. The body is a policy
// in its JSON form; its name may be omitted, and must be the path's if
// given.
func (h *handler) putPolicy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	body, ierr := h.readAdminBody(w, r)
	if ierr != nil {
		writeError(w, ierr)
		return
	}
	p, ierr := decodePolicy(body)
	if ierr != nil {
		writeError(w, ierr)
		return
	}
	switch {
	case p.Name == "":
		p.Name = name
	case p.Name != name:
		writeError(w, badInput("name", "name %q in the body differs from %q in the path", p.Name, name))
		return
	}
	if err := p.Validate(); err != nil {
		writeError(w, h.adminError(r.Context(), "set policy", err))
		return
	}
	for k := range p.Overrides {
		if len(k) > h.opts.MaxKeyLen {
			writeError(w, badInput("overrides", "overrides: key of %d bytes, longer than %d", len(k), h.opts.MaxKeyLen))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.AdminTimeout)
	defer cancel()
	if err := h.opts.Admin.SetPolicy(ctx, p); err != nil {
		writeError(w, h.adminError(ctx, "set policy", err))
		return
	}
	h.writeStored(w, p)
}

func (h *handler) deletePolicy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	force := false
	if s := r.URL.Query().Get("force"); s != "" {
		var err error
		if force, err = strconv.ParseBool(s); err != nil {
			writeError(w, badInput("force", "force: want true or false, got %q", s))
			return
		}
	}
	if _, ok := h.opts.Checker.Policy(name); !ok {
		writeError(w, unknownPolicy(name))
		return
	}
	del := h.opts.Admin.DeletePolicy
	if force {
		fd, ok := h.opts.Admin.(ForceDeleter)
		if !ok {
			writeError(w, &inputError{status: http.StatusNotImplemented, msg: "admin API: this node cannot force a delete"})
			return
		}
		del = fd.ForceDeletePolicy
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.AdminTimeout)
	defer cancel()
	if err := del(ctx, name); err != nil {
		writeError(w, h.adminError(ctx, "delete policy", err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// OverrideRequest is the body of PUT /v1/policies/{name}/overrides/{key}.
type OverrideRequest struct {
	// Limit replaces the policy's limit for the key. Required.
	Limit *int64 `json:"limit"`
}

func (h *handler) putOverride(w http.ResponseWriter, r *http.Request) {
	name, key := r.PathValue("name"), r.PathValue("key")
	if ierr := h.checkOverrideKey(key); ierr != nil {
		writeError(w, ierr)
		return
	}
	body, ierr := h.readAdminBody(w, r)
	if ierr != nil {
		writeError(w, ierr)
		return
	}
	var req OverrideRequest
	if ierr := decodeStrict(body, &req, "limit"); ierr != nil {
		writeError(w, ierr)
		return
	}
	if req.Limit == nil {
		writeError(w, badInput("limit", "limit is required"))
		return
	}
	p, ok := h.opts.Checker.Policy(name)
	if !ok {
		writeError(w, unknownPolicy(name))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.AdminTimeout)
	defer cancel()
	if err := h.opts.Admin.SetOverride(ctx, name, key, *req.Limit); err != nil {
		writeError(w, h.adminError(ctx, "set override", err))
		return
	}
	p = p.Clone()
	if p.Overrides == nil {
		p.Overrides = map[string]int64{}
	}
	p.Overrides[key] = *req.Limit
	h.writeStored(w, p)
}

func (h *handler) deleteOverride(w http.ResponseWriter, r *http.Request) {
	name, key := r.PathValue("name"), r.PathValue("key")
	p, ok := h.opts.Checker.Policy(name)
	if !ok {
		writeError(w, unknownPolicy(name))
		return
	}
	if _, ok := p.Overrides[key]; !ok {
		writeError(w, &inputError{status: http.StatusNotFound, msg: fmt.Sprintf("policy %q has no override for key %q", name, key)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.AdminTimeout)
	defer cancel()
	if err := h.opts.Admin.DeleteOverride(ctx, name, key); err != nil {
		writeError(w, h.adminError(ctx, "delete override", err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) cluster(w http.ResponseWriter, r *http.Request) {
	if h.opts.Status == nil {
		writeError(w, &inputError{status: http.StatusNotFound, msg: "no cluster status on this node"})
		return
	}
	writeJSON(w, http.StatusOK, h.opts.Status())
}

// writeStored answers a write with the policy as this node now holds it;
// want is what the write asked for, the answer if the policy is already
// gone again.
func (h *handler) writeStored(w http.ResponseWriter, want bucket.Policy) {
	if p, ok := h.opts.Checker.Policy(want.Name); ok {
		want = p
	}
	writeJSON(w, http.StatusOK, want)
}

func (h *handler) checkOverrideKey(key string) *inputError {
	if len(key) > h.opts.MaxKeyLen {
		return badInput("key", "key is %d bytes, longer than %d", len(key), h.opts.MaxKeyLen)
	}
	return nil
}

// readAdminBody reads a whole body within MaxBodyBytes.
func (h *handler) readAdminBody(w http.ResponseWriter, r *http.Request) ([]byte, *inputError) {
	if r.ContentLength > h.opts.MaxBodyBytes {
		return nil, h.tooLarge()
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if err != nil {
		return nil, h.bodyError(err)
	}
	return b, nil
}

// adminError turns the error of a PolicyAdmin (or of Validate) into an
// answer: 400 for an invalid policy, 404 for an unknown policy or
// override, else 503 (logged).
func (h *handler) adminError(ctx context.Context, op string, err error) *inputError {
	var fe *bucket.FieldError
	switch {
	case errors.As(err, &fe):
		return badInput(fe.Field, "%s", fe.Error())
	case errors.Is(err, bucket.ErrInvalidPolicy):
		return badInput("", "%s", err.Error())
	case errors.Is(err, bucket.ErrUnknownPolicy), errors.Is(err, bucket.ErrUnknownOverride):
		return &inputError{status: http.StatusNotFound, msg: err.Error()}
	case errors.Is(err, bucket.ErrPolicyInUse):
		return &inputError{status: http.StatusConflict, msg: err.Error(), field: "force"}
	}
	if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		h.errLog.Log(op+" failed", "err", err)
	}
	return &inputError{status: http.StatusServiceUnavailable, msg: op + " failed: " + err.Error()}
}

func unknownPolicy(name string) *inputError {
	return &inputError{status: http.StatusNotFound, msg: fmt.Sprintf("unknown policy %q", name)}
}

// decodeStrict decodes one JSON object into v: fields other than those
// named (exactly, once each) and data after the object are errors.
func decodeStrict(b []byte, v any, fields ...string) *inputError {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return badInput("", "want a JSON object, got null")
	}
	if ierr := checkFields(b, fields...); ierr != nil {
		return ierr
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badInput("", "malformed JSON: data after the object at byte %d", dec.InputOffset())
	}
	return nil
}

// decodePolicy decodes a policy in its JSON form, naming the field at
// fault.
func decodePolicy(b []byte) (bucket.Policy, *inputError) {
	var p bucket.Policy
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return p, badInput("", "want a JSON object, got null")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(&p)
	if err == nil {
		if _, err := dec.Token(); err != io.EOF {
			return bucket.Policy{}, badInput("", "malformed JSON: data after the object at byte %d", dec.InputOffset())
		}
		return p, nil
	}
	var (
		fe  *bucket.FieldError
		syn *json.SyntaxError
	)
	switch {
	case errors.As(err, &fe):
		return bucket.Policy{}, badInput(fe.Field, "%s: %s", fe.Field, fe.Reason)
	case errors.As(err, &syn), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return bucket.Policy{}, jsonError(err)
	}
	if ierr := policyFieldError(b); ierr != nil {
		return bucket.Policy{}, ierr
	}
	return bucket.Policy{}, jsonError(err)
}

// policyFields are the fields of a policy's JSON form, with a value of the
// type each decodes to.
var policyFields = []struct {
	name  string
	value func() any
}{
	{"name", func() any { return new(string) }},
	{"algorithm", func() any { return new(bucket.Algorithm) }},
	{"limit", func() any { return new(int64) }},
	{"window_ms", func() any { return new(int64) }},
	{"burst", func() any { return new(int64) }},
	{"failure_mode", func() any { return new(bucket.FailureMode) }},
	{"shadow", func() any { return new(bool) }},
	{"replication", func() any { return new(bucket.Replication) }},
	{"overrides", func() any { return new(map[string]int64) }},
}

// policyFieldError finds the field of a policy body that bucket.Policy's
// decoder rejected: it wraps its own decoder's errors, which loses the
// field of a type error, and an unknown enum name never had one. Nil if
// no field is at fault.
func policyFieldError(b []byte) *inputError {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil
	}
	known := map[string]bool{}
	for _, f := range policyFields {
		known[f.name] = true
		raw, ok := fields[f.name]
		if !ok {
			continue
		}
		err := json.Unmarshal(raw, f.value())
		var typ *json.UnmarshalTypeError
		switch {
		case err == nil:
		case errors.As(err, &typ):
			return badInput(f.name, "%s: want %s, got %s", f.name, jsonType(typ.Type), typ.Value)
		default:
			return badInput(f.name, "%s: %s", f.name, strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	for name := range fields {
		if !known[name] {
			return badInput(name, "unknown field %q", name)
		}
	}
	return nil
}
