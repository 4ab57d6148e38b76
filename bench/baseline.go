package bench

import (
	"fmt"
	"sort"
	"strings"
)

// Baseline compares, in one run, the CPU per decision of a cluster with
// that of one node carrying the same load per node (ratelimitd bench
// --baseline): rounds alternate the cluster at Rate and the node at
// Rate/Nodes, so that both see the same machine load, and the figure to
// read is the median of the rounds' ratios. The same load per node
// matters: at low utilisation a Go process spends more CPU per request
// on wake-ups (scheduler, futex, epoll), so a node at the cluster's full
// rate would flatter the node.
type Baseline struct {
	// Nodes is the cluster's size; Rate the cluster's checks a second. The
	// node's is Rate/Nodes, or the checks a second the cluster got over
	// Nodes in a round where it fell short of Rate.
	Nodes int     `json:"nodes"`
	Rate  float64 `json:"rate"`
	// Fill is true when the cluster carried the rest of the load,
	// (Nodes-1)/Nodes of the node's rate times Nodes, unmetered, while the
	// node ran: the machine as busy in both runs.
	Fill bool `json:"fill,omitempty"`
	// Rounds are the rounds in the order they ran.
	Rounds []BaselineRound `json:"rounds"`
	// MedianRatio is the median of the rounds' Ratio (those with one).
	MedianRatio float64 `json:"median_ratio"`
	// MedianClusterProjected and MedianNodeProjected are the medians of
	// the rounds' projected decisions a second, per core of each machine:
	// the cluster with each node on a machine of its own, and one node.
	MedianClusterProjected float64 `json:"median_cluster_projected"`
	MedianNodeProjected    float64 `json:"median_node_projected"`
}

// BaselineRound is one round: the cluster's run, then the node's.
type BaselineRound struct {
	// ClusterUS is the cluster's CPU per decision summed over its nodes,
	// NodeUS the node's, in microseconds (NodesCPU.PerDecisionUS).
	ClusterUS float64 `json:"cluster_per_decision_us"`
	NodeUS    float64 `json:"node_per_decision_us"`
	// Ratio is ClusterUS / NodeUS: what a decision costs the cluster in
	// units of what it costs one node (0 when NodeUS is 0).
	Ratio float64 `json:"ratio"`
	// ClusterDecisionsPerSec and NodeDecisionsPerSec are the runs'
	// decision rates; the errors their failed checks.
	ClusterDecisionsPerSec float64 `json:"cluster_decisions_per_s"`
	NodeDecisionsPerSec    float64 `json:"node_decisions_per_s"`
	ClusterErrors          int64   `json:"cluster_errors"`
	NodeErrors             int64   `json:"node_errors"`
	// ClusterProjected and NodeProjected are the runs'
	// NodesCPU.ProjectedPerCore.
	ClusterProjected float64 `json:"cluster_projected"`
	NodeProjected    float64 `json:"node_projected"`
}

// NewBaselineRound makes a round from the cluster's and the node's
// results; a result without CPU figures counts as 0 µs.
func NewBaselineRound(cluster, node *Result) BaselineRound {
	r := BaselineRound{
		ClusterDecisionsPerSec: cluster.DecisionsPerSec, NodeDecisionsPerSec: node.DecisionsPerSec,
		ClusterErrors: cluster.Errors, NodeErrors: node.Errors,
	}
	if c := cluster.CPU; c != nil {
		r.ClusterUS, r.ClusterProjected = c.PerDecisionUS, c.ProjectedPerCore
	}
	if c := node.CPU; c != nil {
		r.NodeUS, r.NodeProjected = c.PerDecisionUS, c.ProjectedPerCore
	}
	if r.NodeUS > 0 {
		r.Ratio = r.ClusterUS / r.NodeUS
	}
	return r
}

// Add appends a round and recomputes the medians.
func (b *Baseline) Add(r BaselineRound) {
	b.Rounds = append(b.Rounds, r)
	var ratios, cp, np []float64
	for _, r := range b.Rounds {
		if r.Ratio > 0 {
			ratios = append(ratios, r.Ratio)
		}
		if r.ClusterProjected > 0 {
			cp = append(cp, r.ClusterProjected)
		}
		if r.NodeProjected > 0 {
			np = append(np, r.NodeProjected)
		}
	}
	b.MedianRatio, b.MedianClusterProjected, b.MedianNodeProjected = Median(ratios), Median(cp), Median(np)
}

// Median is the middle value of xs, the mean of the two middle ones for
// an even count, 0 for none. xs is not changed.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// writeSummary writes the baseline lines of the run's summary.
func (b *Baseline) writeSummary(w *strings.Builder) {
	fmt.Fprintf(w, "baseline     %d node(s) at %s checks/s against 1 node at 1/%d of the checks/s they got (at most %s): the same load per node, rounds alternated:\n",
		b.Nodes, human(b.Rate), b.Nodes, human(b.Rate/float64(max(b.Nodes, 1))))
	if b.Fill {
		fmt.Fprintf(w, "  while 1 node ran, the %d node(s) carried the rest of the load, unmetered: the machine as busy in both\n", b.Nodes)
	}
	for i, r := range b.Rounds {
		fmt.Fprintf(w, "  round %d     %d node(s) %.1fµs per decision (%s decisions/s, %d errors), 1 node %.1fµs (%s decisions/s, %d errors): ratio %.2f\n",
			i+1, b.Nodes, r.ClusterUS, human(r.ClusterDecisionsPerSec), r.ClusterErrors, r.NodeUS, human(r.NodeDecisionsPerSec), r.NodeErrors, r.Ratio)
	}
	fmt.Fprintf(w, "ratio        %.2f, the median of %d round(s): CPU per decision of %d node(s) over that of 1 node\n", b.MedianRatio, len(b.Rounds), b.Nodes)
	if b.MedianClusterProjected > 0 && b.MedianNodeProjected > 0 {
		fmt.Fprintf(w, "scale-out    %s decisions/s projected for %d machines against %s for 1 (%.2fx), per core of each\n",
			human(b.MedianClusterProjected), b.Nodes, human(b.MedianNodeProjected), b.MedianClusterProjected/b.MedianNodeProjected)
	}
}
