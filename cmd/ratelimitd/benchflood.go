package main

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vibewell/ratelimit/bench"
	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
)

// benchFlood is the flood scenario of `ratelimitd bench`: used-up keys of
// the run's policy, probed while the run's load sends fresh keys, and the
// nodes' memory and evictions read before and after.
type benchFlood struct {
	sources []bench.MetricsSource
	note    string
	f       *bench.Flood
}

// embedded gives each in-process node a metrics registry to read; the
// first also carries the process's figures (the load generator's
// included, as it is the same process).
func (b *benchFlood) embedded(i int, cfg *cluster.Config) {
	reg := prometheus.NewRegistry()
	if i == 0 {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		b.note = "in-process nodes: RSS and heap are the bench process's, the load generator's included"
	}
	cfg.Metrics = reg
	b.sources = append(b.sources, bench.GatherMetrics(reg))
}

// start uses up the probed keys of policy p on target.
func (b *benchFlood) start(ctx context.Context, target bench.Target, p *bucket.Policy) (bench.Scenario, error) {
	if p == nil {
		return nil, fmt.Errorf("--scenario flood needs the policy's limit: give --policy-spec, or the nodes' --admin-token")
	}
	if b.note == "" && len(b.sources) == 0 {
		b.note = "memory and evictions not read from this target"
	}
	f, err := bench.NewFlood(bench.FloodConfig{Target: target, Policy: p.Name, Limit: p.Capacity(), Metrics: b.sources, MetricsNote: b.note})
	if err != nil {
		return nil, err
	}
	if err := f.Prepare(ctx); err != nil {
		return nil, err
	}
	b.f = f
	return f, nil
}

// report adds the flood's report to res.
func (b *benchFlood) report(ctx context.Context, res *bench.Result) {
	if b == nil || b.f == nil || res == nil {
		return
	}
	res.Flood = b.f.Report(ctx)
}

// scrape reads the metrics of the http target's nodes at urls.
func (b *benchFlood) scrape(c *benchConfig, urls []string, readFile func(string) ([]byte, error)) error {
	if len(urls) == 0 {
		return nil
	}
	hc, err := nodeClient(c.Timeout, c.CACert, readFile)
	if err != nil {
		return err
	}
	for _, u := range urls {
		b.sources = append(b.sources, bench.ScrapeMetrics(hc, u))
	}
	return nil
}
