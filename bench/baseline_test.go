package bench

import (
	"math"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{2}, 2},
		{[]float64{3, 1}, 2},
		{[]float64{1.5, 1.2, 1.9}, 1.5},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := append([]float64(nil), c.xs...)
		if got := Median(c.xs); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.xs, got, c.want)
		}
		for i := range in {
			if in[i] != c.xs[i] {
				t.Errorf("Median reordered its argument: %v", c.xs)
			}
		}
	}
}

// Each round's ratio is the cluster's CPU per decision over the node's;
// the baseline's is the median of the rounds' (a round whose node used no
// measurable CPU has none and is left out), and the projections are the
// medians of the rounds'.
func TestBaselineRatios(t *testing.T) {
	run := func(us, projected, rate float64, errs int64) *Result {
		return &Result{DecisionsPerSec: rate, Errors: errs, CPU: &NodesCPU{PerDecisionUS: us, ProjectedPerCore: projected}}
	}
	b := &Baseline{Nodes: 3, Rate: 12000}
	b.Add(NewBaselineRound(run(90, 30000, 12000, 0), run(60, 16000, 4000, 1)))
	b.Add(NewBaselineRound(run(80, 33000, 11990, 0), run(50, 18000, 4000, 0)))
	b.Add(NewBaselineRound(run(70, 36000, 12000, 2), run(70, 14000, 3990, 0)))
	b.Add(NewBaselineRound(run(70, 0, 12000, 0), &Result{DecisionsPerSec: 4000}))
	wantRatios := []float64{1.5, 1.6, 1, 0}
	for i, r := range b.Rounds {
		if math.Abs(r.Ratio-wantRatios[i]) > 1e-12 {
			t.Errorf("round %d: ratio %v, want %v", i+1, r.Ratio, wantRatios[i])
		}
	}
	if r := b.Rounds[0]; r.ClusterUS != 90 || r.NodeUS != 60 || r.NodeErrors != 1 || r.NodeDecisionsPerSec != 4000 || r.ClusterProjected != 30000 {
		t.Errorf("round 1: %+v", r)
	}
	if b.MedianRatio != 1.5 || b.MedianClusterProjected != 33000 || b.MedianNodeProjected != 16000 {
		t.Errorf("medians: ratio %v, cluster %v, node %v; want 1.5, 33000, 16000", b.MedianRatio, b.MedianClusterProjected, b.MedianNodeProjected)
	}
	var sb strings.Builder
	b.writeSummary(&sb)
	for _, want := range []string{"3 node(s) at 12.0k checks/s against 1 node at 1/3 of the checks/s they got (at most 4.0k)", "round 2", "80.0µs per decision", "ratio 1.60",
		"ratio        1.50, the median of 4 round(s)", "33.0k decisions/s projected for 3 machines against 16.0k for 1 (2.06x)"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sb.String())
		}
	}
}
