package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// CPUMeter reads the CPU time that each node of a target has used so far,
// from the operating system: spawned processes (Spawned), or the bench's
// own process for in-process nodes (SelfCPU).
type CPUMeter interface {
	CPUSamples() ([]CPUSample, error)
}

// CPUSample is one node's CPU time (user plus system) since it started.
type CPUSample struct {
	Name string
	PID  int
	CPU  time.Duration
}

// SelfCPU meters the bench process itself: with in-process nodes, what
// the nodes and the load generator used together.
type SelfCPU struct{}

// CPUSamples returns the bench process's CPU time.
func (SelfCPU) CPUSamples() ([]CPUSample, error) {
	pid := os.Getpid()
	d, err := ProcessCPU(pid)
	if err != nil {
		return nil, err
	}
	return []CPUSample{{Name: "bench process (nodes and generator)", PID: pid, CPU: d}}, nil
}

// IdleCPU is what the nodes used at rest: per node, the share of one core
// over Window.
type IdleCPU struct {
	Window time.Duration
	Share  map[int]float64 // by PID
}

// MeasureIdle samples m, waits d (or until ctx is done), samples again, and
// returns each node's share of a core in between.
func MeasureIdle(ctx context.Context, m CPUMeter, d time.Duration) (*IdleCPU, error) {
	before, err := m.CPUSamples()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	after, err := m.CPUSamples()
	if err != nil {
		return nil, err
	}
	window := time.Since(t0)
	idle := &IdleCPU{Window: window, Share: map[int]float64{}}
	for _, b := range before {
		for _, a := range after {
			if a.PID == b.PID {
				idle.Share[a.PID] = (a.CPU - b.CPU).Seconds() / window.Seconds()
			}
		}
	}
	return idle, nil
}

// NodesCPU is the nodes' CPU during a run, from the operating system.
type NodesCPU struct {
	Nodes []NodeCPU `json:"nodes"`
	// IdleWindow is how long the nodes were measured at rest before the
	// run (0: not measured, and nothing subtracted).
	IdleWindow Seconds `json:"idle_window_s,omitempty"`
	// PerDecisionUS is every node's CPU during the run, less what it uses
	// at rest, per decision of the run, in microseconds: what a decision
	// costs the cluster.
	PerDecisionUS float64 `json:"per_decision_us"`
	// ProjectedPerCore is the decisions a second the nodes would reach,
	// each on a machine of its own with one core for it, the load spread as
	// in this run: the node that saturates first bounds it, at
	// (1 - its idle share) / its CPU per decision. A machine of k cores for
	// a node gives up to k times as much.
	ProjectedPerCore float64 `json:"projected_per_core"`
	// Pinning says which CPUs the nodes were given (SpawnConfig.Pin), or
	// why they were not.
	Pinning string `json:"pinning,omitempty"`
}

// NodeCPU is one node's CPU during a run.
type NodeCPU struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// IdleShare is its share of a core at rest, before the run.
	IdleShare float64 `json:"idle_share"`
	// CPU is what it used during the run; Share that over the run's time.
	CPU   Seconds `json:"cpu_s"`
	Share float64 `json:"share"`
	// PerDecisionUS is CPU less its idle share, per decision of the whole
	// run, in microseconds.
	PerDecisionUS float64 `json:"per_decision_us"`
}

// nodesCPU computes the report from samples taken at the run's start and
// end.
func nodesCPU(before, after []CPUSample, elapsed time.Duration, decisions int64, idle *IdleCPU) *NodesCPU {
	out := &NodesCPU{}
	if idle != nil {
		out.IdleWindow = Seconds(idle.Window)
	}
	secs := elapsed.Seconds()
	var total float64
	for _, a := range after {
		var b *CPUSample
		for i := range before {
			if before[i].PID == a.PID {
				b = &before[i]
			}
		}
		if b == nil {
			continue
		}
		n := NodeCPU{Name: a.Name, PID: a.PID, CPU: Seconds(a.CPU - b.CPU)}
		if idle != nil {
			n.IdleShare = idle.Share[a.PID]
		}
		busy := (a.CPU - b.CPU).Seconds()
		if secs > 0 {
			n.Share = busy / secs
			busy = max(busy-n.IdleShare*secs, 0)
		}
		if decisions > 0 {
			n.PerDecisionUS = busy / float64(decisions) * 1e6
			if n.PerDecisionUS > 0 {
				if p := (1 - n.IdleShare) / (n.PerDecisionUS / 1e6); out.ProjectedPerCore == 0 || p < out.ProjectedPerCore {
					out.ProjectedPerCore = p
				}
			}
		}
		total += n.PerDecisionUS
		out.Nodes = append(out.Nodes, n)
	}
	out.PerDecisionUS = total
	return out
}

// writeSummary writes the CPU lines of the run's summary.
func (c *NodesCPU) writeSummary(b *strings.Builder) {
	idle := "idle not measured"
	if c.IdleWindow > 0 {
		idle = fmt.Sprintf("idle measured over %.1fs and subtracted", c.IdleWindow.D().Seconds())
	}
	fmt.Fprintf(b, "node CPU     %.1fµs per decision, all nodes (%s)\n", c.PerDecisionUS, idle)
	for _, n := range c.Nodes {
		fmt.Fprintf(b, "  %-22s pid %-7d %5.1f%% of a core in the run, %.2f%% idle, %.1fµs per decision\n",
			n.Name, n.PID, 100*n.Share, 100*n.IdleShare, n.PerDecisionUS)
	}
	if c.ProjectedPerCore > 0 {
		fmt.Fprintf(b, "projected    %s decisions/s with each of the %d node(s) on a machine of its own, per core for it\n", human(c.ProjectedPerCore), len(c.Nodes))
	}
	if c.Pinning != "" {
		fmt.Fprintf(b, "pinning      %s\n", c.Pinning)
	}
}
