package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// ScenarioFlood is the scenario of a flood of distinct keys: run it with
// many Keys, so that the load is a stream of fresh keys, while Flood probes
// keys it used up before the run.
const ScenarioFlood = "flood"

// ErrFloodForgave is returned by Flood.Run when a used-up key was allowed
// during the flood: its counter was lost.
var ErrFloodForgave = errors.New("bench: a used-up key was allowed during the flood")

// FloodConfig configures a Flood.
type FloodConfig struct {
	// Target receives the probes. Required.
	Target Target
	// Policy names the policy of the used-up keys; its window must outlast
	// the run. Default: "auth".
	Policy string
	// Limit is the hits that use a key up: the policy's capacity. Required.
	Limit int64
	// Probes is the number of used-up keys. Default: 100.
	Probes int
	// Every is the pause between two rounds of probes. Default: 500 ms.
	Every time.Duration
	// KeyPrefix starts the probed keys. Default: "flood-probe:".
	KeyPrefix string
}

// Flood is a Scenario that probes used-up keys while the run's load floods
// the target with fresh ones: every probe must be denied.
type Flood struct {
	cfg     FloodConfig
	probes  atomic.Int64
	allowed atomic.Int64
}

var _ Scenario = (*Flood)(nil)

// NewFlood returns the flood scenario cfg describes.
func NewFlood(cfg FloodConfig) (*Flood, error) {
	if cfg.Target == nil || cfg.Limit <= 0 {
		return nil, fmt.Errorf("%w: scenario flood needs a target and the policy's limit", ErrConfig)
	}
	if cfg.Policy == "" {
		cfg.Policy = DefaultPolicy
	}
	if cfg.Probes <= 0 {
		cfg.Probes = 100
	}
	if cfg.Every <= 0 {
		cfg.Every = 500 * time.Millisecond
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "flood-probe:"
	}
	return &Flood{cfg: cfg}, nil
}

func (f *Flood) key(i int) string { return f.cfg.KeyPrefix + strconv.Itoa(i) }

// Prepare uses up every probed key; call it before the run.
func (f *Flood) Prepare(ctx context.Context) error {
	for i := range f.cfg.Probes {
		if _, err := f.cfg.Target.Check(ctx, f.cfg.Policy, f.key(i), f.cfg.Limit); err != nil {
			return fmt.Errorf("bench: using up %s: %w", f.key(i), err)
		}
		d, err := f.cfg.Target.Check(ctx, f.cfg.Policy, f.key(i), 1)
		if err != nil {
			return fmt.Errorf("bench: using up %s: %w", f.key(i), err)
		}
		if d.Allowed {
			return fmt.Errorf("%w: %s allowed past %d hits: is Limit the policy's capacity?", ErrConfig, f.key(i), f.cfg.Limit)
		}
	}
	return nil
}

// Run probes every used-up key each Every until ctx is done, marks a
// round in which one was allowed, and returns ErrFloodForgave if any was.
func (f *Flood) Run(ctx context.Context, env ScenarioEnv) error {
	t := time.NewTicker(f.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if n := f.allowed.Load(); n > 0 {
				return fmt.Errorf("%w: %d of %d probes", ErrFloodForgave, n, f.probes.Load())
			}
			return nil
		case <-t.C:
		}
		allowed := 0
		for i := range f.cfg.Probes {
			d, err := f.cfg.Target.Check(ctx, f.cfg.Policy, f.key(i), 1)
			if err != nil {
				continue // the run's context ended, or the target failed: not a verdict
			}
			f.probes.Add(1)
			if d.Allowed {
				allowed++
				f.allowed.Add(1)
			}
		}
		if allowed > 0 && env.Mark != nil {
			env.Mark("probe-allowed", "", strconv.Itoa(allowed)+" used-up keys allowed")
		}
	}
}

// Probes returns the probes decided so far and how many were allowed.
func (f *Flood) Probes() (probes, allowed int64) { return f.probes.Load(), f.allowed.Load() }
