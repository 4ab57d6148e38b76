package cluster

import (
	"context"
	"fmt"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vmihailenco/msgpack/v5"
)

// Overview is the cluster at a glance, as one node gathers it: members
// with their raft role and ring share, and the cluster's counters summed
// over the members that answered. Counters only grow (until a node
// restarts): two Overviews a few seconds apart give rates.
type Overview struct {
	Node    string           `json:"node"`
	Members []MemberOverview `json:"members"`
	// Leader is the raft leader's name; empty when there is none, or on
	// a standalone node.
	Leader        string `json:"leader"`
	PolicyVersion uint64 `json:"policy_version"`
	// Counts are summed over Nodes.
	Counts Counts `json:"counts"`
	// Nodes are the members whose counters are included.
	Nodes []string `json:"nodes"`
	// Missing are the members that did not answer in time, with why.
	Missing map[string]string `json:"missing,omitempty"`
}

// MemberOverview is a member with its place in the cluster.
type MemberOverview struct {
	Member
	// Role is "leader", "voter" or "nonvoter" in raft; empty when raft
	// does not know the member (yet), or on a standalone node.
	Role string `json:"role,omitempty"`
	// RingShare is the fraction of keys the member owns, 0 to 1.
	RingShare float64 `json:"ring_share"`
}

// Counts are a node's event counters (those of its metrics).
type Counts struct {
	// Policies are the decisions by policy.
	Policies map[string]PolicyCounts `json:"policies" msgpack:"p"`
	// HandoffSent and HandoffReceived count counters moved at ring
	// changes.
	HandoffSent     uint64 `json:"handoff_sent" msgpack:"hs"`
	HandoffReceived uint64 `json:"handoff_received" msgpack:"hr"`
	// ReplicaSent, ReplicaReceived and ReplicaPromoted count the counter
	// copies kept by successors.
	ReplicaSent     uint64 `json:"replica_sent" msgpack:"rs"`
	ReplicaReceived uint64 `json:"replica_received" msgpack:"rr"`
	ReplicaPromoted uint64 `json:"replica_promoted" msgpack:"rp"`
	// StoreErrors counts checks whose store failed.
	StoreErrors uint64 `json:"store_errors" msgpack:"se"`
	// Evictions and ReplicaEvictions count the counters a full memory
	// store evicted (all reasons): the node's own, and the copies it
	// keeps for peers.
	Evictions        uint64 `json:"evictions" msgpack:"ev"`
	ReplicaEvictions uint64 `json:"replica_evictions" msgpack:"re"`
	// PeerErrors counts the requests to peers that failed in the
	// transport (ratelimit_peer_errors_total).
	PeerErrors uint64 `json:"peer_errors" msgpack:"pe"`
}

// PolicyCounts are one policy's decisions.
type PolicyCounts struct {
	Allowed  uint64 `json:"allowed" msgpack:"a"`
	Denied   uint64 `json:"denied" msgpack:"d"`
	Shadowed uint64 `json:"shadowed" msgpack:"s"`
	// Fallback counts the checks the failure mode decided.
	Fallback uint64 `json:"fallback" msgpack:"f"`
}

// methodCounts asks a peer for its Counts.
const methodCounts = "counts"

// maxCountsPolicies bounds the policies of a peer's Counts.
const maxCountsPolicies = 10_000

// Overview gathers the cluster's overview: members from this node's view,
// counters from every member that answers within a couple of seconds.
func (n *Node) Overview(ctx context.Context) Overview {
	st := n.Status()
	ov := Overview{Node: st.Node, PolicyVersion: st.PolicyVersion, Nodes: []string{n.cfg.NodeName}}
	roles := map[string]string{}
	if st.Raft != nil {
		ov.Leader = st.Raft.Leader
		for _, v := range st.Raft.Voters {
			roles[v] = "voter"
		}
		for _, v := range st.Raft.NonVoters {
			roles[v] = "nonvoter"
		}
		if ov.Leader != "" {
			roles[ov.Leader] = "leader"
		}
	}
	shares := map[string]float64{n.cfg.NodeName: 1}
	rt := n.route.Load()
	if rt != nil && rt.ring.Len() > 0 {
		shares = rt.ring.Shares()
	}
	for _, m := range st.Members {
		ov.Members = append(ov.Members, MemberOverview{Member: m, Role: roles[m.Name], RingShare: shares[m.Name]})
	}
	sort.Slice(ov.Members, func(i, j int) bool { return ov.Members[i].Name < ov.Members[j].Name })
	ov.Counts = n.counts()
	if rt == nil || n.tr == nil {
		return ov
	}
	valid := func(c *Counts) error {
		if len(c.Policies) > maxCountsPolicies {
			return fmt.Errorf("cluster: counts of %d policies, more than %d", len(c.Policies), maxCountsPolicies)
		}
		return nil
	}
	ov.Missing = askPeers(ctx, n, rt, methodCounts, nil, valid, func(name string, c Counts) {
		ov.Nodes = append(ov.Nodes, name)
		ov.Counts.add(c)
	})
	sort.Strings(ov.Nodes)
	return ov
}

// askPeers calls method with body on every other member of rt at once,
// each call within peerAskTimeout, and hands each answer that decodes as
// a T (and that valid, when set, accepts) to each, one at a time, in the
// caller's goroutine. It returns why the members that did not answer in
// time did not, or nil when all did.
func askPeers[T any](ctx context.Context, n *Node, rt *routeTable, method string, body []byte, valid func(*T) error, each func(name string, v T)) (missing map[string]string) {
	type answer struct {
		name string
		v    T
		err  error
	}
	answers := make(chan answer, len(rt.addrs))
	asked := 0
	for name, addr := range rt.addrs {
		if name == rt.self {
			continue
		}
		asked++
		go func() {
			cctx, cancel := context.WithTimeout(ctx, peerAskTimeout)
			defer cancel()
			a := answer{name: name}
			var b []byte
			if b, a.err = n.tr.Call(cctx, addr, method, body); a.err == nil {
				a.err = msgpack.Unmarshal(b, &a.v)
			}
			if a.err == nil && valid != nil {
				a.err = valid(&a.v)
			}
			answers <- a
		}()
	}
	for range asked {
		a := <-answers
		if a.err != nil {
			if missing == nil {
				missing = map[string]string{}
			}
			missing[a.name] = a.err.Error()
			continue
		}
		each(a.name, a.v)
	}
	return missing
}

func (c *Counts) add(o Counts) {
	for name, p := range o.Policies {
		q := c.Policies[name]
		q.Allowed += p.Allowed
		q.Denied += p.Denied
		q.Shadowed += p.Shadowed
		q.Fallback += p.Fallback
		c.Policies[name] = q
	}
	c.HandoffSent += o.HandoffSent
	c.HandoffReceived += o.HandoffReceived
	c.ReplicaSent += o.ReplicaSent
	c.ReplicaReceived += o.ReplicaReceived
	c.ReplicaPromoted += o.ReplicaPromoted
	c.StoreErrors += o.StoreErrors
	c.Evictions += o.Evictions
	c.ReplicaEvictions += o.ReplicaEvictions
	c.PeerErrors += o.PeerErrors
}

// counts reads this node's counters from its metrics, for the policies
// of its table.
func (n *Node) counts() Counts {
	m := n.metrics
	c := Counts{
		Policies:        map[string]PolicyCounts{},
		HandoffSent:     counterValue(m.handedOff),
		HandoffReceived: counterValue(m.receivedHandoff),
		ReplicaSent:     counterValue(m.replicaSent),
		ReplicaReceived: counterValue(m.replicaReceived),
		ReplicaPromoted: counterValue(m.replicaPromoted),
		StoreErrors:     counterValue(m.errors),
		PeerErrors:      n.peerErrs.total(),
	}
	for _, s := range n.memoryStores() {
		if s.name == "replicas" {
			c.ReplicaEvictions += uint64(s.store.Evictions())
		} else {
			c.Evictions += uint64(s.store.Evictions())
		}
	}
	for name := range *n.policies.Load() {
		c.Policies[name] = PolicyCounts{}
	}
	eachCounter(m.decisions, func(labels map[string]string, v uint64) {
		p, ok := c.Policies[labels["policy"]]
		if !ok {
			return
		}
		switch labels["result"] {
		case "allowed":
			p.Allowed = v
		case "denied":
			p.Denied = v
		case "shadowed":
			p.Shadowed = v
		}
		c.Policies[labels["policy"]] = p
	})
	eachCounter(m.fallbacks, func(labels map[string]string, v uint64) {
		if p, ok := c.Policies[labels["policy"]]; ok {
			p.Fallback += v
			c.Policies[labels["policy"]] = p
		}
	})
	return c
}

func (n *Node) serveCounts() ([]byte, error) { return msgpack.Marshal(n.counts()) }

// counterValue reads a counter's value.
func counterValue(c prometheus.Counter) uint64 {
	var m dto.Metric
	if c == nil || c.Write(&m) != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}

// eachCounter calls fn with the labels and value of each counter of a
// collector.
func eachCounter(col prometheus.Collector, fn func(labels map[string]string, v uint64)) {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		col.Collect(ch)
		close(ch)
	}()
	for metric := range ch {
		var m dto.Metric
		if metric.Write(&m) != nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		fn(labels, uint64(m.GetCounter().GetValue()))
	}
}
