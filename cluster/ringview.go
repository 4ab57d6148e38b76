package cluster

import (
	"encoding/json"
	"strconv"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// The ring view is what a node publishes of its ring (GET /v1/ring), so
// that a client can send each check to its key's owner: one hop instead of
// two. It holds the members with their HTTP addresses and the partition
// table (a key's partition is xxhash64 of its encoding, bucket.Key's
// AppendBinary, mod the table's length). Its version is a hash of its
// content, so nodes that agree on the ring publish the same version, and a
// client that sees another one on an answer knows its view is stale.

// ringView is the JSON of GET /v1/ring; httpapi.RingView reads it.
type ringView struct {
	Version string       `json:"version"`
	Node    string       `json:"node"`
	Members []ringMember `json:"members"`
	// Owners is the partition table: the index in Members of the owner of
	// each partition.
	Owners []int `json:"owners"`
}

type ringMember struct {
	Name     string `json:"name"`
	HTTPAddr string `json:"http_addr,omitempty"`
}

// published is the view of one route table, built once.
type published struct {
	rt      *routeTable
	version string
	body    []byte
}

// ringPublished caches the view of the current route table.
type ringPublished struct{ p atomic.Pointer[published] }

// Ring returns the version of the ring this node routes by, and its view
// as JSON (see httpapi.RingView): both empty for a standalone node or one
// whose ring is not built yet. Nodes that agree on the ring return the
// same version. It is cheap enough for every answer.
func (n *Node) Ring() (version string, view []byte) {
	if p := n.ringView(); p != nil {
		return p.version, p.body
	}
	return "", nil
}

func (n *Node) ringView() *published {
	rt := n.route.Load()
	if rt == nil || n.gossip == nil {
		return nil
	}
	if p := n.ringPub.p.Load(); p != nil && p.rt == rt {
		return p
	}
	p := n.buildRingView(rt)
	n.ringPub.p.Store(p)
	return p
}

// buildRingView publishes rt: members in name order, with the HTTP
// addresses their gossip metadata advertises.
func (n *Node) buildRingView(rt *routeTable) *published {
	names := rt.ring.Members()
	http := n.gossip.httpAddrs()
	v := ringView{Node: n.cfg.NodeName, Members: make([]ringMember, len(names))}
	index := make(map[string]int, len(names))
	h := xxhash.New()
	for i, name := range names {
		v.Members[i] = ringMember{Name: name, HTTPAddr: http[name]}
		index[name] = i
		h.WriteString(name)
		h.WriteString("\x00")
		h.WriteString(http[name])
		h.WriteString("\x00")
	}
	owners := rt.ring.Owners()
	v.Owners = make([]int, len(owners))
	for i, o := range owners {
		v.Owners[i] = index[o]
	}
	h.WriteString(strconv.Itoa(len(owners)))
	// The table follows from the names and the ring config; hashing it too
	// tells apart nodes whose ring configs differ.
	var b [8]byte
	for _, o := range v.Owners {
		b[0], b[1] = byte(o), byte(o>>8)
		h.Write(b[:2])
	}
	v.Version = strconv.FormatUint(h.Sum64(), 16)
	body, _ := json.Marshal(v)
	return &published{rt: rt, version: v.Version, body: body}
}

// httpAddrs returns the HTTP address each live member advertises.
func (g *gossip) httpAddrs() map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]string, len(g.alive))
	for name, m := range g.alive {
		out[name] = m.HTTPAddr
	}
	return out
}
