package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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
	// Metrics are the target's nodes' metrics, read before and after the
	// run for the report's memory and evictions; none: the report has the
	// probes alone.
	Metrics []MetricsSource
	// MetricsNote says what the metrics cover, e.g. that an in-process
	// target's memory includes the load generator's.
	MetricsNote string
}

// MetricsSource reads one node's metrics: its /metrics (ScrapeMetrics),
// or an in-process registry (GatherMetrics).
type MetricsSource func(ctx context.Context) (map[string]*dto.MetricFamily, error)

// ScrapeMetrics reads the Prometheus text at base + "/metrics".
func ScrapeMetrics(client *http.Client, base string) MetricsSource {
	return func(ctx context.Context) (map[string]*dto.MetricFamily, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/metrics", nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("bench: %s/metrics answered %s", base, resp.Status)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		return p.TextToMetricFamilies(io.LimitReader(resp.Body, 64<<20))
	}
}

// GatherMetrics reads an in-process registry.
func GatherMetrics(g prometheus.Gatherer) MetricsSource {
	return func(context.Context) (map[string]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		if err != nil {
			return nil, err
		}
		out := make(map[string]*dto.MetricFamily, len(mfs))
		for _, mf := range mfs {
			out[mf.GetName()] = mf
		}
		return out, nil
	}
}

// FloodReport is what a flood did to its target: the probes of used-up
// keys, and the nodes' memory and evictions (summed over the nodes).
type FloodReport struct {
	ProbeKeys     int   `json:"probe_keys"`     // used-up keys probed
	Probes        int64 `json:"probes"`         // probes decided
	ProbesAllowed int64 `json:"probes_allowed"` // of those, allowed: must be 0
	// Counters held in the nodes' stores at the end ("counters": the keys
	// they own; "replicas": copies for peers), and MaxKeys, their bound.
	Counters map[string]float64 `json:"counters,omitempty"`
	MaxKeys  map[string]float64 `json:"max_keys,omitempty"`
	// Evictions during the run, by reason (idle, counting, denying,
	// refused), all stores.
	Evictions map[string]float64 `json:"evictions,omitempty"`
	// RSS and Go heap in use, before the run and at its end.
	RSSBefore  float64 `json:"rss_before_bytes,omitempty"`
	RSSAfter   float64 `json:"rss_after_bytes,omitempty"`
	HeapBefore float64 `json:"heap_before_bytes,omitempty"`
	HeapAfter  float64 `json:"heap_after_bytes,omitempty"`
	// Note says what the figures cover, or why some are missing.
	Note string `json:"note,omitempty"`
}

// floodSnapshot is the sum of the nodes' figures at one time.
type floodSnapshot struct {
	counters, maxKeys, evictions map[string]float64
	rss, heap                    float64
}

// snapshot reads every node's metrics; err is the first failure.
func (f *Flood) snapshot(ctx context.Context) (floodSnapshot, error) {
	s := floodSnapshot{counters: map[string]float64{}, maxKeys: map[string]float64{}, evictions: map[string]float64{}}
	var first error
	for _, src := range f.cfg.Metrics {
		mfs, err := src(ctx)
		if err != nil {
			first = cmp(first, err)
			continue
		}
		s.rss += sumMetric(mfs["process_resident_memory_bytes"], "", nil)
		s.heap += sumMetric(mfs["go_memstats_heap_inuse_bytes"], "", nil)
		sumMetric(mfs["ratelimit_store_counters"], "store", s.counters)
		sumMetric(mfs["ratelimit_store_max_counters"], "store", s.maxKeys)
		sumMetric(mfs["ratelimit_store_evictions_total"], "reason", s.evictions)
	}
	return s, first
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// sumMetric returns the sum of mf's samples, and adds each to by[label].
func sumMetric(mf *dto.MetricFamily, label string, by map[string]float64) float64 {
	var sum float64
	for _, m := range mf.GetMetric() {
		var v float64
		switch {
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		case m.Untyped != nil:
			v = m.GetUntyped().GetValue()
		}
		sum += v
		if by != nil {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					by[l.GetValue()] += v
				}
			}
		}
	}
	return sum
}

// Flood is a Scenario that probes used-up keys while the run's load floods
// the target with fresh ones: every probe must be denied.
type Flood struct {
	cfg       FloodConfig
	probes    atomic.Int64
	allowed   atomic.Int64
	before    floodSnapshot
	beforeErr error
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

// Prepare uses up every probed key and reads the nodes' metrics; call it
// before the run.
func (f *Flood) Prepare(ctx context.Context) error {
	if len(f.cfg.Metrics) > 0 {
		f.before, f.beforeErr = f.snapshot(ctx)
	}
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

// Report reads the nodes' metrics again and returns what the flood did;
// call it after the run.
func (f *Flood) Report(ctx context.Context) *FloodReport {
	r := &FloodReport{ProbeKeys: f.cfg.Probes, Note: f.cfg.MetricsNote}
	r.Probes, r.ProbesAllowed = f.Probes()
	if len(f.cfg.Metrics) == 0 {
		return r
	}
	after, err := f.snapshot(ctx)
	if err = cmp(f.beforeErr, err); err != nil {
		r.Note = strings.TrimPrefix(r.Note+"; metrics: "+err.Error(), "; ")
	}
	r.Counters, r.MaxKeys = after.counters, after.maxKeys
	r.Evictions = map[string]float64{}
	for reason, n := range after.evictions {
		r.Evictions[reason] = n - f.before.evictions[reason]
	}
	r.RSSBefore, r.RSSAfter, r.HeapBefore, r.HeapAfter = f.before.rss, after.rss, f.before.heap, after.heap
	return r
}

// writeSummary writes the report's lines of a run's summary.
func (r *FloodReport) writeSummary(b *strings.Builder) {
	verdict := "all denied"
	if r.ProbesAllowed > 0 {
		verdict = fmt.Sprintf("%d ALLOWED: used-up keys were forgiven", r.ProbesAllowed)
	}
	fmt.Fprintf(b, "flood        %d probes of %d used-up keys: %s\n", r.Probes, r.ProbeKeys, verdict)
	if r.Counters != nil {
		fmt.Fprintf(b, "flood store  counters %s (bound %s)", sortedPairs(r.Counters), sortedPairs(r.MaxKeys))
		fmt.Fprintf(b, "; evictions during the run %s\n", sortedPairs(r.Evictions))
		fmt.Fprintf(b, "flood memory RSS %.1f -> %.1f MiB, Go heap in use %.1f -> %.1f MiB\n",
			r.RSSBefore/(1<<20), r.RSSAfter/(1<<20), r.HeapBefore/(1<<20), r.HeapAfter/(1<<20))
	}
	if r.Note != "" {
		fmt.Fprintf(b, "flood note   %s\n", r.Note)
	}
}

// sortedPairs formats m as "k v, k v" in key order.
func sortedPairs(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.0f", k, m[k])
	}
	return strings.Join(parts, ", ")
}
