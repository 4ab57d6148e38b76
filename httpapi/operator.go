package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// Operator answers an operator's questions: who is being limited, where a
// key lives, and the cluster at a glance. ratelimitd adapts *cluster.Node
// to it. Implementations must be safe for concurrent use.
//
// Errors wrapping bucket.ErrUnknownPolicy are answered 404,
// bucket.ErrInvalidKey 400, any other 503.
type Operator interface {
	// TopDenied returns the limit most denied keys of policy over the
	// last window, cluster-wide.
	TopDenied(ctx context.Context, policy string, window time.Duration, limit int) (TopDeniedResponse, error)
	// Owner names the owner and successor of key under policy and reads
	// its counter without consuming.
	Owner(ctx context.Context, policy, key string) (OwnerResponse, error)
	// Overview gathers the members and the cluster's counters.
	Overview(ctx context.Context) (OverviewResponse, error)
}

// Bounds of the operator endpoints.
const (
	// MaxTopKeys bounds the n of GET /v1/top.
	MaxTopKeys = 100
	// DefaultTopKeys is the n of GET /v1/top when none is given.
	DefaultTopKeys = 10
	// MaxTopWindow is the longest window of GET /v1/top.
	MaxTopWindow = 15 * time.Minute
	// operatorTimeout bounds an operator request that asks the peers.
	operatorTimeout = 5 * time.Second
	// maxPolicyName bounds the policy of an operator request.
	maxPolicyName = 256
)

// checkPolicyName refuses an empty or overlong policy name.
func checkPolicyName(policy string) *inputError {
	switch {
	case policy == "":
		return badInput("policy", "policy is required")
	case len(policy) > maxPolicyName:
		return badInput("policy", "policy is %d bytes, longer than %d", len(policy), maxPolicyName)
	}
	return nil
}

// TopDeniedResponse is the body of GET /v1/top.
type TopDeniedResponse struct {
	Policy string `json:"policy"`
	// WindowSeconds is the span counted: the current minute and the whole
	// minutes before it.
	WindowSeconds int64 `json:"window_s"`
	// Denied is the number of denials counted, all keys together.
	Denied uint64 `json:"denied"`
	// Keys are the most denied keys, most denied first.
	Keys []DeniedKey `json:"keys"`
	// Nodes are the members whose counts are included.
	Nodes []string `json:"nodes"`
	// Missing are the members that did not answer, with why.
	Missing map[string]string `json:"missing,omitempty"`
}

// DeniedKey is a key of TopDeniedResponse: its true number of denials is
// between Count-Error and Count.
type DeniedKey struct {
	Key   string `json:"key"`
	Count uint64 `json:"count"`
	Error uint64 `json:"error"`
	// Truncated is true when the key was longer than the node keeps, and
	// Key is its start.
	Truncated bool `json:"truncated,omitempty"`
}

// OwnerResponse is the body of GET /v1/owner.
type OwnerResponse struct {
	Policy string `json:"policy"`
	Key    string `json:"key"`
	// Owner is the member that decides the key's checks.
	Owner string `json:"owner"`
	// OwnerHTTPAddr is the owner's HTTP API, if it advertised one.
	OwnerHTTPAddr string `json:"owner_http_addr,omitempty"`
	// Successor keeps a copy of the counter and takes the key over if the
	// owner fails; empty on a single node.
	Successor string `json:"successor,omitempty"`
	// Counter is the counter as the owner holds it now; nil if it could
	// not be read (CounterError says why).
	Counter      *CheckResponse `json:"counter,omitempty"`
	CounterError string         `json:"counter_error,omitempty"`
}

// OverviewResponse is the body of GET /v1/overview: what the dashboard
// shows.
type OverviewResponse struct {
	// Node is the member that answered.
	Node    string           `json:"node"`
	Members []OverviewMember `json:"members"`
	// Leader is the raft leader; empty when there is none.
	Leader        string `json:"leader"`
	PolicyVersion uint64 `json:"policy_version"`
	// Policies are the decisions by policy, summed over Nodes: counters
	// that only grow, so two answers give rates.
	Policies map[string]PolicyCounts `json:"policies"`
	// Counters are the other event counters, by name (handoff_sent,
	// replica_sent, ...), summed over Nodes.
	Counters map[string]uint64 `json:"counters"`
	// Nodes are the members whose counters are included.
	Nodes []string `json:"nodes"`
	// Missing are the members that did not answer, with why.
	Missing map[string]string `json:"missing,omitempty"`
}

// OverviewMember is one member of OverviewResponse.
type OverviewMember struct {
	Name       string `json:"name"`
	State      string `json:"state"` // alive, suspect, left or dead
	HTTPAddr   string `json:"http_addr,omitempty"`
	PeerAddr   string `json:"peer_addr,omitempty"`
	GossipAddr string `json:"gossip_addr,omitempty"`
	// Role is "leader", "voter" or "nonvoter" in raft, or empty.
	Role string `json:"role,omitempty"`
	// RingShare is the fraction of keys the member owns, 0 to 1.
	RingShare float64 `json:"ring_share"`
	Self      bool    `json:"self,omitempty"`
}

// PolicyCounts are one policy's decisions.
type PolicyCounts struct {
	Allowed  uint64 `json:"allowed"`
	Denied   uint64 `json:"denied"`
	Shadowed uint64 `json:"shadowed"`
	Fallback uint64 `json:"fallback"`
}

// operatorRoutes registers the operator endpoints and the dashboard:
//
//	GET /v1/top?policy=P&window=5m&n=10   most denied keys (admin API)
//	GET /v1/owner?policy=P&key=K          a key's owner, successor, counter (admin API)
//	GET /v1/overview                      members and counters (admin API)
//	GET /dashboard                        the dashboard page; / redirects to it
func (h *handler) operatorRoutes() {
	h.route("GET", "/v1/top", h.read(h.operator(h.top)))
	h.route("GET", "/v1/owner", h.read(h.operator(h.owner)))
	h.route("GET", "/v1/overview", h.read(h.operator(h.overview)))
	h.dashboardRoutes()
}

// operator answers 404 on a node without an Operator.
func (h *handler) operator(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.opts.Operator == nil {
			writeError(w, &inputError{status: http.StatusNotFound, msg: "no operator endpoints on this node"})
			return
		}
		f(w, r)
	}
}

func (h *handler) top(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	policy := q.Get("policy")
	if ierr := checkPolicyName(policy); ierr != nil {
		writeError(w, ierr)
		return
	}
	window := 5 * time.Minute
	if s := q.Get("window"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Minute || d > MaxTopWindow {
			writeError(w, badInput("window", "window: want a duration from 1m to %v (1m, 5m, 15m), got %q", MaxTopWindow, s))
			return
		}
		window = d
	}
	n := DefaultTopKeys
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > MaxTopKeys {
			writeError(w, badInput("n", "n: want 1 to %d, got %q", MaxTopKeys, s))
			return
		}
		n = v
	}
	ctx, cancel := context.WithTimeout(r.Context(), operatorTimeout)
	defer cancel()
	resp, err := h.opts.Operator.TopDenied(ctx, policy, window, n)
	if err != nil {
		writeError(w, h.operatorError(ctx, "top", err))
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *handler) owner(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	policy, key := q.Get("policy"), q.Get("key")
	if ierr := checkPolicyName(policy); ierr != nil {
		writeError(w, ierr)
		return
	}
	switch {
	case key == "":
		writeError(w, badInput("key", "key is required"))
		return
	case len(key) > h.opts.MaxKeyLen:
		writeError(w, badInput("key", "key is %d bytes, longer than %d", len(key), h.opts.MaxKeyLen))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), operatorTimeout)
	defer cancel()
	resp, err := h.opts.Operator.Owner(ctx, policy, key)
	if err != nil {
		writeError(w, h.operatorError(ctx, "owner", err))
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *handler) overview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), operatorTimeout)
	defer cancel()
	resp, err := h.opts.Operator.Overview(ctx)
	if err != nil {
		writeError(w, h.operatorError(ctx, "overview", err))
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// operatorError turns an Operator's error into an answer.
func (h *handler) operatorError(ctx context.Context, op string, err error) *inputError {
	switch {
	case errors.Is(err, bucket.ErrUnknownPolicy):
		return &inputError{status: http.StatusNotFound, msg: err.Error(), field: "policy"}
	case errors.Is(err, bucket.ErrInvalidKey):
		return badInput("key", "%s", err.Error())
	}
	if ctx.Err() == nil {
		h.errLog.log(op+" failed", "err", err)
	}
	return &inputError{status: http.StatusServiceUnavailable, msg: op + " failed: " + err.Error()}
}
