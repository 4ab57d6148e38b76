package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
)

// nodeOperator serves the HTTP API's operator endpoints from a node.
type nodeOperator struct{ n *cluster.Node }

var _ httpapi.Operator = nodeOperator{}

func (o nodeOperator) TopDenied(ctx context.Context, policy string, window time.Duration, limit int) (httpapi.TopDeniedResponse, error) {
	top, err := o.n.TopDenied(ctx, policy, window, limit)
	if err != nil {
		return httpapi.TopDeniedResponse{}, err
	}
	resp := httpapi.TopDeniedResponse{
		Policy: top.Policy, WindowSeconds: int64(top.Window / time.Second), Denied: top.Denied,
		Keys: make([]httpapi.DeniedKey, len(top.Keys)), Nodes: top.Nodes, Missing: top.Missing,
	}
	for i, k := range top.Keys {
		resp.Keys[i] = httpapi.DeniedKey{Key: k.Key, Count: k.Count, Error: k.Error, Truncated: k.Truncated}
	}
	return resp, nil
}

func (o nodeOperator) Owner(ctx context.Context, policy, key string) (httpapi.OwnerResponse, error) {
	loc, err := o.n.Locate(ctx, policy, key)
	if err != nil {
		return httpapi.OwnerResponse{}, err
	}
	resp := httpapi.OwnerResponse{
		Policy: loc.Policy, Key: loc.Key, Owner: loc.Owner, OwnerHTTPAddr: loc.OwnerHTTPAddr,
		Successor: loc.Successor, CounterError: loc.CounterError,
	}
	if loc.CounterError == "" {
		c := httpapi.NewCheckResponse(policy, loc.Counter)
		resp.Counter = &c
	}
	return resp, nil
}

func (o nodeOperator) Overview(ctx context.Context) (httpapi.OverviewResponse, error) {
	ov := o.n.Overview(ctx)
	resp := httpapi.OverviewResponse{
		Node: ov.Node, Leader: ov.Leader, PolicyVersion: ov.PolicyVersion,
		Policies: map[string]httpapi.PolicyCounts{}, Nodes: ov.Nodes, Missing: ov.Missing,
		Counters: map[string]uint64{
			"handoff_sent":      ov.Counts.HandoffSent,
			"handoff_received":  ov.Counts.HandoffReceived,
			"replica_sent":      ov.Counts.ReplicaSent,
			"replica_received":  ov.Counts.ReplicaReceived,
			"replica_promoted":  ov.Counts.ReplicaPromoted,
			"store_errors":      ov.Counts.StoreErrors,
			"evictions":         ov.Counts.Evictions,
			"replica_evictions": ov.Counts.ReplicaEvictions,
			"peer_errors":       ov.Counts.PeerErrors,
		},
	}
	for _, m := range ov.Members {
		resp.Members = append(resp.Members, httpapi.OverviewMember{
			Name: m.Name, State: m.State, HTTPAddr: m.HTTPAddr, PeerAddr: m.PeerAddr, GossipAddr: m.GossipAddr,
			Role: m.Role, RingShare: m.RingShare, Self: m.Self,
		})
	}
	for name, p := range ov.Counts.Policies {
		resp.Policies[name] = httpapi.PolicyCounts{Allowed: p.Allowed, Denied: p.Denied, Shadowed: p.Shadowed, Fallback: p.Fallback}
	}
	return resp, nil
}

// statusCollector exposes what the node's status knows, for alerts that
// need no query across nodes: whether raft has a leader, whether this
// node is it, and the members by state as this node sees them.
type statusCollector struct {
	n                         *cluster.Node
	leader, isLeader, members *prometheus.Desc
}

func newStatusCollector(n *cluster.Node) *statusCollector {
	return &statusCollector{
		n: n,
		leader: prometheus.NewDesc("ratelimit_raft_leader",
			"1 when this node knows a raft leader (policy writes can commit), else 0. Absent on a standalone node.", nil, nil),
		isLeader: prometheus.NewDesc("ratelimit_raft_is_leader",
			"1 on the raft leader, else 0. Absent on a standalone node.", nil, nil),
		members: prometheus.NewDesc("ratelimit_gossip_members",
			"Members as this node's gossip sees them, by state (alive, suspect, dead, left).", []string{"state"}, nil),
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.leader
	ch <- c.isLeader
	ch <- c.members
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.n.Status()
	if st.Raft != nil {
		ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, boolValue(st.Raft.Leader != ""))
		ch <- prometheus.MustNewConstMetric(c.isLeader, prometheus.GaugeValue, boolValue(st.Raft.State == "leader"))
	}
	byState := map[string]int{"alive": 0, "suspect": 0, "dead": 0, "left": 0}
	for _, m := range st.Members {
		byState[m.State]++
	}
	for state, n := range byState {
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(n), state)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// topDeniedSlots maps --top-denied-slots to cluster.Config.TopDeniedSlots,
// where 0 means the default and a negative number off.
func topDeniedSlots(n int64) int {
	if n == 0 {
		return -1
	}
	return int(n)
}

// leaseMinLimit maps --lease-min-limit to cluster.Config.LeaseMinLimit,
// where 0 means the default and a negative value no leases.
func leaseMinLimit(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}
