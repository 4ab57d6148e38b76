package httpapi

import (
	"net/http"

	"github.com/cespare/xxhash/v2"

	"github.com/vibewell/ratelimit/bucket"
)

// RingHeader is the response header of a check answered by a cluster
// node: the version of the ring it routes by (see RingView). A client
// that routes by an older view refreshes it.
const RingHeader = "Ratelimit-Ring"

// RingView is a node's view of its cluster's ring, the body of GET
// /v1/ring: enough to send each check to its key's owner. A key's
// partition is xxhash64 of its encoding (bucket.Key.AppendBinary) mod
// len(Owners), and Owners[partition] is the index in Members of its
// owner. Nodes that agree on the ring publish the same Version.
type RingView struct {
	Version string       `json:"version"`
	Node    string       `json:"node"` // the node that answered
	Members []RingMember `json:"members"`
	Owners  []int        `json:"owners"`
}

// Owner returns the index in Members of the owner of policy's key, or -1
// when the view has no partition table or the key cannot be encoded.
func (v *RingView) Owner(policy, key string) int {
	return ownerIndex(v.Owners, policy, key)
}

// ownerIndex looks policy's key up in a partition table.
func ownerIndex(owners []int, policy, key string) int {
	if len(owners) == 0 {
		return -1
	}
	var buf [128]byte
	enc, err := bucket.Key{Policy: policy, ID: key}.AppendBinary(buf[:0])
	if err != nil {
		return -1
	}
	return owners[xxhash.Sum64(enc)%uint64(len(owners))]
}

// RingMember is a member of the ring and its HTTP API address (host:port;
// empty if it advertises none).
type RingMember struct {
	Name     string `json:"name"`
	HTTPAddr string `json:"http_addr,omitempty"`
}

// ringPublisher is the optional interface of a Checker in a cluster
// (*cluster.Node): its ring version and view (RingView's JSON).
type ringPublisher interface {
	Ring() (version string, view []byte)
}

// ringRoutes serves GET /v1/ring when the Checker publishes a ring.
func (h *handler) ringRoutes() {
	rp, ok := h.opts.Checker.(ringPublisher)
	if !ok {
		return
	}
	h.route("GET", "/v1/ring", func(w http.ResponseWriter, r *http.Request) {
		version, body := rp.Ring()
		if body == nil {
			writeError(w, &inputError{status: http.StatusServiceUnavailable, msg: "the ring is not built yet"})
			return
		}
		w.Header()["Content-Type"] = jsonContentType
		w.Header().Set(RingHeader, version)
		_, _ = w.Write(body)
	})
}

// setRingHeader tells the client which ring version answered.
func (h *handler) setRingHeader(hdr http.Header) {
	if rp, ok := h.opts.Checker.(ringPublisher); ok {
		if v, _ := rp.Ring(); v != "" {
			hdr[RingHeader] = []string{v}
		}
	}
}
