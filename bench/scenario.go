package bench

import (
	"context"
	"fmt"
	"time"
)

// Churn scenarios, for Config.Scenario with spawned nodes.
const (
	ScenarioNone           = "none"
	ScenarioRollingRestart = "rolling-restart"
	ScenarioKill           = "kill"
	ScenarioScaleOut       = "scale-out"
)

// ChurnConfig configures a churn scenario on spawned nodes.
type ChurnConfig struct {
	// Kind is ScenarioRollingRestart, ScenarioKill or ScenarioScaleOut.
	Kind string
	// Nodes are the spawned nodes the load goes to. Required.
	Nodes *Spawned
	// Target is the HTTP target over Nodes; the scenario takes nodes out of
	// its rotation and puts them back, as a load balancer would. Required.
	Target *HTTP
	// After is when the churn starts, from the run's start. Default: a
	// third of the run's Duration.
	After time.Duration
	// Gap is the pause between two nodes of a rolling restart. Default: the
	// rest of the first half of the run split evenly between the nodes.
	Gap time.Duration
	// Drain is how long a node is out of the rotation before a rolling
	// restart stops it, so calls already sent to it finish. Default: 200 ms.
	Drain time.Duration
	// DetectAfter is how long a killed node stays in the rotation, as a
	// load balancer takes time to notice a dead backend. Default: 1 s.
	DetectAfter time.Duration
}

// Churn is a Scenario that restarts, kills or adds spawned nodes during a
// run and marks each step on the run's time series.
type Churn struct{ cfg ChurnConfig }

var _ Scenario = (*Churn)(nil)

// NewChurn returns the churn scenario cfg describes.
func NewChurn(cfg ChurnConfig) (*Churn, error) {
	switch cfg.Kind {
	case ScenarioRollingRestart, ScenarioKill, ScenarioScaleOut:
	default:
		return nil, fmt.Errorf("%w: unknown scenario %q (rolling-restart, kill or scale-out)", ErrConfig, cfg.Kind)
	}
	if cfg.Nodes == nil || cfg.Target == nil {
		return nil, fmt.Errorf("%w: scenario %s needs spawned nodes and an HTTP target", ErrConfig, cfg.Kind)
	}
	if cfg.Kind == ScenarioKill && cfg.Nodes.Len() < 2 {
		return nil, fmt.Errorf("%w: scenario kill needs at least 2 nodes", ErrConfig)
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 200 * time.Millisecond
	}
	if cfg.DetectAfter <= 0 {
		cfg.DetectAfter = time.Second
	}
	return &Churn{cfg: cfg}, nil
}

// Run runs the churn; it returns when done or when ctx ends.
func (c *Churn) Run(ctx context.Context, env ScenarioEnv) error {
	cfg := c.cfg
	after := cfg.After
	if after <= 0 {
		after = env.Duration / 3
	}
	if !sleepCtx(ctx, time.Until(env.Start.Add(after))) {
		return nil
	}
	s := cfg.Nodes
	switch cfg.Kind {
	case ScenarioRollingRestart:
		n := s.Len()
		gap := cfg.Gap
		if gap <= 0 {
			gap = max(env.Duration/2-after, 0) / time.Duration(n)
		}
		for i := range n {
			name := s.Name(i)
			if err := c.rotate(i, false); err != nil {
				return err
			}
			if !sleepCtx(ctx, cfg.Drain) {
				return nil
			}
			env.Mark("stop", name, "out of rotation; SIGTERM")
			if err := s.Stop(i); err != nil {
				return err
			}
			if err := s.start(ctx, i); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if err := c.rotate(i, true); err != nil {
				return err
			}
			env.Mark("ready", name, "restarted; back in rotation")
			if i < n-1 && !sleepCtx(ctx, gap) {
				return nil
			}
		}
	case ScenarioKill:
		i := s.Len() - 1
		name := s.Name(i)
		env.Mark("kill", name, "SIGKILL")
		if err := s.Kill(i); err != nil {
			return err
		}
		if !sleepCtx(ctx, cfg.DetectAfter) {
			return nil
		}
		if err := c.rotate(i, false); err != nil {
			return err
		}
		env.Mark("removed", name, "out of rotation")
	case ScenarioScaleOut:
		env.Mark("add", fmt.Sprintf("bench-node-%d", s.Len()), "starting")
		i, err := s.Add(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := cfg.Target.SetURLs(s.URLs()); err != nil {
			return err
		}
		env.Mark("ready", s.Name(i), "joined; in rotation")
	}
	return nil
}

// rotate takes node i out of the target's rotation or puts it back; the
// other nodes' membership is kept. The only node is never taken out.
func (c *Churn) rotate(i int, in bool) error {
	all := c.cfg.Nodes.URLs()
	cur := map[string]bool{}
	for _, u := range c.cfg.Target.URLs() {
		cur[u] = true
	}
	cur[all[i]] = in
	var urls []string
	for _, u := range all {
		if cur[u] {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return nil // the last node stays: its restart shows as errors
	}
	return c.cfg.Target.SetURLs(urls)
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
