package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/vibewell/ratelimit/bucket"
)

// ErrConfig is wrapped by the errors of an invalid Config.
var ErrConfig = errors.New("bench: invalid config")

// Defaults of Config fields.
const (
	DefaultPolicy      = "auth"
	DefaultKeys        = 10_000
	DefaultConcurrency = 64
	DefaultDuration    = 10 * time.Second
	DefaultGrace       = 5 * time.Second
	// tick is the resolution of the time series kept during a run; the
	// report sums it to seconds, and times recovery at this resolution.
	tick = 100 * time.Millisecond
	// maxLatency is the largest latency the histograms hold.
	maxLatency = int64(time.Minute)
)

// Config describes one run. The zero value of every field but Target takes
// the default in its comment.
type Config struct {
	// Target receives the checks. Required. Run does not close it.
	Target Target
	// Policy names the policy of every check. Default: "auth".
	Policy string
	// PolicySpec is the policy's definition as the target applies it, for the
	// accuracy accounting. Nil: accuracy is not accounted.
	PolicySpec *bucket.Policy
	// Hits is the hits of each check. Default: 1.
	Hits int64
	// Keys is the number of distinct keys. Default: 10,000.
	Keys int
	// Dist picks the key of each check. Default: Uniform.
	Dist Dist
	// ZipfS is the exponent of the Zipf distribution, above 1. Default: 1.1.
	ZipfS float64
	// KeyPrefix starts every key, so that runs against a long-lived target
	// do not share counters. Default: "bench-" plus a random run id and ":".
	KeyPrefix string
	// Batch is the checks per call; above 1 it uses BatchTarget.CheckBatch
	// when the target has it. Default: 1.
	Batch int
	// Concurrency is the number of callers: in a closed loop each sends its
	// next call when the last returns; in an open loop it bounds the calls
	// in flight. Default: 64.
	Concurrency int
	// Rate, when positive, makes the run an open loop: calls start on a
	// fixed schedule of Rate checks a second (Rate/Batch calls), and each
	// call's latency is measured from its scheduled time, so a stall of the
	// target or of the generator shows in the latency. Zero: closed loop.
	Rate float64
	// Duration bounds the run's time. Default: 10 s.
	Duration time.Duration
	// Requests bounds the run's number of checks (not calls); zero: no
	// bound but Duration.
	Requests int64
	// Warmup, when positive, runs the same load for this long before the
	// measured run, on keys of their own, and discards its results: the
	// target's connections, goroutines and heap are set up before the
	// clock starts, as in steady use. The result reports only its counts.
	Warmup time.Duration
	// Grace is how long calls still in flight at the end may take before
	// they are cancelled. Default: 5 s.
	Grace time.Duration
	// Seed seeds the key choice of every caller. Default: from the clock.
	Seed uint64
	// Scenario runs beside the load (a churn of nodes); nil: none.
	Scenario Scenario
	// Progress, if set, is called every ProgressInterval with the run's
	// progress, from one goroutine.
	Progress func(Progress)
	// ProgressInterval defaults to 1 s.
	ProgressInterval time.Duration
	// Params is copied into the result as the run's description; Run fills
	// in the workload fields it knows.
	Params Params
	// CPU, if set, is read at the start and the end of the measured run,
	// and the result reports each node's CPU per decision (Result.CPU).
	CPU CPUMeter
	// Idle is what the nodes used at rest (MeasureIdle), reported with the
	// run's CPU and subtracted from it.
	Idle *IdleCPU
	// Pinning describes the CPUs the nodes were given, for the report.
	Pinning string

	clock clock // tests inject one; default the system clock
}

// Progress is a snapshot of a run in progress.
type Progress struct {
	Elapsed time.Duration
	// Checks counts decided and failed checks so far.
	Checks  int64
	Allowed int64
	Denied  int64
	Errors  int64
	// Rate is checks a second over the last interval.
	Rate float64
}

// Scenario runs beside a run's load, e.g. restarting nodes. It must return
// when ctx is done.
type Scenario interface {
	Run(ctx context.Context, env ScenarioEnv) error
}

// ScenarioEnv is what a Scenario knows of its run.
type ScenarioEnv struct {
	// Start is when the load started; Duration the run's time bound.
	Start    time.Time
	Duration time.Duration
	// Mark records an event on the run's time series.
	Mark func(kind, node, detail string)
}

// clock is the time source of a run; tests inject a fake one.
type clock interface {
	Now() time.Time
	// SleepUntil returns at t or when ctx is done.
	SleepUntil(ctx context.Context, t time.Time)
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) SleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}

func (c Config) withDefaults() (Config, error) {
	if c.Target == nil {
		return c, fmt.Errorf("%w: no target", ErrConfig)
	}
	if c.Policy == "" {
		c.Policy = DefaultPolicy
	}
	if c.Hits == 0 {
		c.Hits = 1
	}
	if c.Keys <= 0 {
		c.Keys = DefaultKeys
	}
	if c.Dist == Hot {
		c.Keys = 1
	}
	if c.Batch <= 0 {
		c.Batch = 1
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Duration <= 0 {
		c.Duration = DefaultDuration
	}
	if c.Grace <= 0 {
		c.Grace = DefaultGrace
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = time.Second
	}
	if c.clock == nil {
		c.clock = systemClock{}
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	if c.KeyPrefix == "" {
		id := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), c.Seed)).Uint64()
		c.KeyPrefix = "bench-" + strconv.FormatUint(id, 36) + ":"
	}
	switch {
	case c.Hits < 0:
		return c, fmt.Errorf("%w: hits %d is negative", ErrConfig, c.Hits)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return c, fmt.Errorf("%w: rate %v", ErrConfig, c.Rate)
	case c.Requests < 0:
		return c, fmt.Errorf("%w: requests %d is negative", ErrConfig, c.Requests)
	case c.Warmup < 0:
		return c, fmt.Errorf("%w: warm-up %v is negative", ErrConfig, c.Warmup)
	case c.Dist > Hot:
		return c, fmt.Errorf("%w: unknown distribution %d", ErrConfig, c.Dist)
	}
	if c.PolicySpec != nil && c.PolicySpec.Name != c.Policy {
		return c, fmt.Errorf("%w: policy spec %q does not match policy %q", ErrConfig, c.PolicySpec.Name, c.Policy)
	}
	return c, nil
}

// runner is the shared state of one run.
type runner struct {
	cfg     Config
	keys    []string
	acc     *accounting
	batcher BatchTarget // nil when the target does not batch
	start   time.Time
	end     time.Time // the time bound
	stop    atomic.Bool
	budget  atomic.Int64 // checks not yet issued (Requests bound)
	ctx     context.Context

	ticks []tickSlot // per tick, indexed by time since start

	mu      sync.Mutex
	seconds map[int]*hdr.Histogram // per-second latency, 2 significant digits
	total   *hdr.Histogram
	errs    map[string]int64
	events  []Event

	gen Generator
}

// tickSlot holds the counts of one tick of the time series.
type tickSlot struct {
	checks, allowed, denied, errors atomic.Int64
}

// Run runs the load that cfg describes against cfg.Target until its
// Duration or Requests bound, or until ctx is done (then the result says
// Interrupted). It returns an error only for an invalid config or a
// failed scenario; failed checks are counted in the result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var warm *Warmup
	if cfg.Warmup > 0 {
		if warm, err = warmup(ctx, cfg); err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			return &Result{Params: cfg.describe(), Machine: DescribeMachine(), Interrupted: true, Warmup: warm}, nil
		}
	}
	r := &runner{
		cfg:     cfg,
		keys:    keyNames(cfg.KeyPrefix, cfg.Keys),
		seconds: make(map[int]*hdr.Histogram),
		total:   newHist(),
		errs:    make(map[string]int64),
	}
	r.acc = newAccounting(cfg.PolicySpec, r.keys, cfg.Hits)
	if bt, ok := cfg.Target.(BatchTarget); ok && cfg.Batch > 1 {
		r.batcher = bt
	}
	r.ticks = make([]tickSlot, int((cfg.Duration+cfg.Grace)/tick)+2)
	if cfg.Requests > 0 {
		r.budget.Store(cfg.Requests)
	} else {
		r.budget.Store(math.MaxInt64)
	}

	callCtx, cancelCalls := context.WithCancel(ctx)
	defer cancelCalls()
	r.ctx = callCtx

	// The callers, with their histograms, are made before the clock starts
	// and wait for it: the generator's own set-up is not the target's
	// latency. A collection first, as testing.B does, so that the garbage of
	// what ran before (a warm-up) is not collected during the run.
	var workers sync.WaitGroup
	var jobs chan time.Time
	if cfg.Rate > 0 {
		jobs = make(chan time.Time, cfg.Concurrency)
	}
	begin := make(chan struct{})
	for i := range cfg.Concurrency {
		w := r.newWorker(i)
		workers.Add(1)
		go func() {
			defer workers.Done()
			<-begin
			if jobs != nil {
				w.openLoop(jobs)
			} else {
				w.closedLoop()
			}
			w.flush()
		}()
	}
	runtime.GC()
	var cpuBefore []CPUSample
	if cfg.CPU != nil {
		if cpuBefore, err = cfg.CPU.CPUSamples(); err != nil {
			return nil, fmt.Errorf("bench: node CPU: %w", err)
		}
	}
	r.start = cfg.clock.Now()
	r.end = r.start.Add(cfg.Duration)
	close(begin)

	// The time bound: stop issuing at the end, cancel stragglers after the
	// grace period.
	timerDone := make(chan struct{})
	timerCtx, cancelTimer := context.WithCancel(ctx)
	defer cancelTimer()
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		cfg.clock.SleepUntil(timerCtx, r.end)
		r.stop.Store(true)
		select {
		case <-timerDone:
			return
		case <-ctx.Done():
		}
		cancelCalls()
	}()
	var scenarioErr error
	scenarioCtx, cancelScenario := context.WithCancel(ctx)
	defer cancelScenario()
	if cfg.Scenario != nil {
		bg.Add(1)
		go func() {
			defer bg.Done()
			scenarioErr = cfg.Scenario.Run(scenarioCtx, ScenarioEnv{Start: r.start, Duration: cfg.Duration, Mark: r.mark})
		}()
	}
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.Progress != nil {
		progressWG.Add(1)
		go func() { defer progressWG.Done(); r.progressLoop(progressDone) }()
	}

	if jobs != nil {
		r.dispatch(ctx, jobs)
		close(jobs)
	}
	// Stragglers get the grace period, then are cancelled.
	workersDone := make(chan struct{})
	go func() { workers.Wait(); close(workersDone) }()
	select {
	case <-workersDone:
	case <-ctx.Done():
		<-workersDone
	case <-afterFunc(cfg.clock, ctx, r.end.Add(cfg.Grace), workersDone):
		cancelCalls()
		<-workersDone
	}
	finished := cfg.clock.Now()
	var cpuAfter []CPUSample
	if cfg.CPU != nil {
		cpuAfter, _ = cfg.CPU.CPUSamples() // a node gone by now is left out
	}
	r.stop.Store(true)
	cancelTimer()
	close(timerDone)
	cancelScenario()
	bg.Wait()
	close(progressDone)
	progressWG.Wait()

	res := r.result(finished, ctx.Err() != nil)
	res.Warmup = warm
	if cfg.CPU != nil {
		res.CPU = nodesCPU(cpuBefore, cpuAfter, finished.Sub(r.start), res.Allowed+res.Denied, cfg.Idle)
		res.CPU.Pinning = cfg.Pinning
	}
	if scenarioErr != nil && !errors.Is(scenarioErr, context.Canceled) {
		return res, fmt.Errorf("bench: scenario: %w", scenarioErr)
	}
	return res, nil
}

// warmup runs cfg's load for cfg.Warmup on keys of its own, without its
// bounds of count, scenario or progress, and sums up what it did.
func warmup(ctx context.Context, cfg Config) (*Warmup, error) {
	w := cfg
	w.Warmup, w.Duration, w.Requests = 0, cfg.Warmup, 0
	w.Scenario, w.Progress, w.PolicySpec, w.CPU = nil, nil, nil, nil
	w.KeyPrefix = cfg.KeyPrefix + "warmup:"
	w.Params = Params{}
	res, err := Run(ctx, w)
	if err != nil {
		return nil, fmt.Errorf("bench: warm-up: %w", err)
	}
	return &Warmup{Duration: Seconds(cfg.Warmup), Checks: res.Checks, Errors: res.Errors}, nil
}

// afterFunc returns a channel closed at t (by clk), unless done closes or
// ctx ends first.
func afterFunc(clk clock, ctx context.Context, t time.Time, done <-chan struct{}) <-chan struct{} {
	ch := make(chan struct{})
	sctx, cancel := context.WithCancel(ctx)
	go func() {
		<-done
		cancel()
	}()
	go func() {
		clk.SleepUntil(sctx, t)
		if sctx.Err() == nil {
			close(ch)
		}
	}()
	return ch
}

// take reserves up to n checks of the Requests budget and returns how many
// it got; 0 means the run is over.
func (r *runner) take(n int, open bool) int {
	if !open && r.stop.Load() {
		return 0 // an open loop sends what was scheduled before the end
	}
	left := r.budget.Add(-int64(n))
	if left >= 0 {
		return n
	}
	if got := int64(n) + left; got > 0 {
		return int(got)
	}
	return 0
}

// dispatch is the open loop's scheduler: call i is due at start + i×gap. It
// sends every due call's scheduled time to the workers; when they are all
// busy it blocks, falls behind, and records by how much (the latency of the
// late calls still counts from their scheduled time).
func (r *runner) dispatch(ctx context.Context, jobs chan<- time.Time) {
	clk := r.cfg.clock
	gap := float64(time.Second) * float64(r.cfg.Batch) / r.cfg.Rate
	r.gen.Mode = "open"
	r.gen.Rate = r.cfg.Rate
	for i := int64(0); ; i++ {
		due := r.start.Add(time.Duration(float64(i) * gap))
		if !due.Before(r.end) || ctx.Err() != nil {
			return
		}
		now := clk.Now()
		if now.Before(due) {
			clk.SleepUntil(ctx, due)
			if ctx.Err() != nil {
				return
			}
			now = due
		}
		if lag := now.Sub(due); lag > r.gen.MaxLag {
			r.gen.MaxLag = lag
		}
		select {
		case jobs <- due:
		default:
			// Every caller is busy: the generator falls behind.
			r.gen.Late++
			select {
			case jobs <- due:
			case <-ctx.Done():
				return
			}
			if lag := clk.Now().Sub(due); lag > r.gen.MaxLag {
				r.gen.MaxLag = lag
			}
		}
		r.gen.Scheduled++
		if r.stop.Load() || r.cfg.Requests > 0 && r.budget.Load() <= 0 {
			return
		}
	}
}

func (r *runner) mark(kind, node, detail string) {
	at := r.cfg.clock.Now().Sub(r.start)
	r.mu.Lock()
	r.events = append(r.events, Event{At: Seconds(at), Kind: kind, Node: node, Detail: detail})
	r.mu.Unlock()
}

func (r *runner) progressLoop(done <-chan struct{}) {
	t := time.NewTicker(r.cfg.ProgressInterval)
	defer t.Stop()
	var last int64
	lastAt := r.start
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		now := r.cfg.clock.Now()
		var p Progress
		for i := range r.ticks {
			s := &r.ticks[i]
			p.Checks += s.checks.Load()
			p.Allowed += s.allowed.Load()
			p.Denied += s.denied.Load()
			p.Errors += s.errors.Load()
		}
		p.Elapsed = now.Sub(r.start)
		if d := now.Sub(lastAt).Seconds(); d > 0 {
			p.Rate = float64(p.Checks-last) / d
		}
		last, lastAt = p.Checks, now
		r.cfg.Progress(p)
	}
}

func newHist() *hdr.Histogram { return hdr.New(1, maxLatency, 3) }

func newSecondHist() *hdr.Histogram { return hdr.New(1, maxLatency, 2) }

// worker is one caller. Its counters are its own and flushed to the runner
// at every tick.
type worker struct {
	r      *runner
	keys   *keyGen
	hist   *hdr.Histogram
	sec    *hdr.Histogram
	secIdx int
	tick   int
	counts struct{ checks, allowed, denied, errors int64 }
	errs   map[string]int64

	checks []Check
	idx    []int
	out    []Outcome
}

func (r *runner) newWorker(i int) *worker {
	w := &worker{
		r:    r,
		keys: newKeyGen(r.cfg.Dist, r.cfg.Keys, r.cfg.ZipfS, r.cfg.Seed, uint64(i)),
		hist: newHist(),
		sec:  newSecondHist(),
		errs: make(map[string]int64),
	}
	w.checks = make([]Check, r.cfg.Batch)
	w.idx = make([]int, r.cfg.Batch)
	w.out = make([]Outcome, r.cfg.Batch)
	for j := range w.checks {
		w.checks[j] = Check{Policy: r.cfg.Policy, Hits: r.cfg.Hits}
	}
	return w
}

func (w *worker) closedLoop() {
	clk := w.r.cfg.clock
	for {
		n := w.r.take(w.r.cfg.Batch, false)
		if n == 0 {
			return
		}
		sent := clk.Now()
		if !sent.Before(w.r.end) {
			w.r.stop.Store(true)
			return
		}
		w.call(n, sent, sent)
	}
}

func (w *worker) openLoop(jobs <-chan time.Time) {
	clk := w.r.cfg.clock
	for due := range jobs {
		n := w.r.take(w.r.cfg.Batch, true)
		if n == 0 {
			if w.r.cfg.Requests > 0 && w.r.budget.Load() <= 0 {
				w.r.stop.Store(true)
			}
			continue // drain the schedule
		}
		w.call(n, due, clk.Now())
	}
}

// call sends n checks as one call, scheduled at due and sent at sent, and
// records the outcome.
func (w *worker) call(n int, due, sent time.Time) {
	r := w.r
	for j := 0; j < n; j++ {
		k := w.keys.next()
		w.idx[j] = k
		w.checks[j].Key = r.keys[k]
	}
	var callErr error
	if n == 1 {
		d, err := r.cfg.Target.Check(r.ctx, r.cfg.Policy, w.checks[0].Key, r.cfg.Hits)
		w.out[0] = Outcome{Decision: d, Err: err}
	} else if r.batcher != nil {
		callErr = r.batcher.CheckBatch(r.ctx, w.checks[:n], w.out[:n])
	} else {
		for j := 0; j < n; j++ {
			d, err := r.cfg.Target.Check(r.ctx, r.cfg.Policy, w.checks[j].Key, r.cfg.Hits)
			w.out[j] = Outcome{Decision: d, Err: err}
		}
	}
	done := r.cfg.clock.Now()
	if callErr != nil && r.stopping(callErr) {
		return
	}
	w.advance(done)
	lat := int64(done.Sub(due))
	_ = w.hist.RecordValue(min(max(lat, 1), maxLatency))
	_ = w.sec.RecordValue(min(max(lat, 1), maxLatency))
	for j := 0; j < n; j++ {
		err := callErr
		if err == nil {
			err = w.out[j].Err
		}
		if err != nil {
			if r.stopping(err) {
				continue
			}
			w.counts.errors++
			w.counts.checks++
			w.errs[ErrorKind(err)]++
			continue
		}
		w.counts.checks++
		allowed := w.out[j].Decision.Allowed
		if allowed {
			w.counts.allowed++
		} else {
			w.counts.denied++
		}
		r.acc.record(w.idx[j], allowed, sent, done)
	}
}

// stopping reports whether err is the cancellation of a run that is ending:
// such failures are not the target's and are not counted.
func (r *runner) stopping(err error) bool {
	return r.ctx.Err() != nil && errors.Is(err, context.Canceled)
}

// advance moves the worker's tick to the one holding t, flushing the last.
func (w *worker) advance(t time.Time) {
	tk := int(t.Sub(w.r.start) / tick)
	if tk != w.tick {
		w.flushTick()
		w.tick = tk
	}
	if s := tk * int(tick) / int(time.Second); s != w.secIdx {
		w.flushSecond()
		w.secIdx = s
	}
}

func (w *worker) flushTick() {
	r := w.r
	i := min(max(w.tick, 0), len(r.ticks)-1)
	s := &r.ticks[i]
	s.checks.Add(w.counts.checks)
	s.allowed.Add(w.counts.allowed)
	s.denied.Add(w.counts.denied)
	s.errors.Add(w.counts.errors)
	w.counts = struct{ checks, allowed, denied, errors int64 }{}
}

func (w *worker) flushSecond() {
	if w.sec.TotalCount() == 0 {
		return
	}
	r := w.r
	r.mu.Lock()
	h := r.seconds[w.secIdx]
	if h == nil {
		h = newSecondHist()
		r.seconds[w.secIdx] = h
	}
	h.Merge(w.sec)
	r.mu.Unlock()
	w.sec.Reset()
}

func (w *worker) flush() {
	w.flushTick()
	w.flushSecond()
	r := w.r
	r.mu.Lock()
	r.total.Merge(w.hist)
	for k, v := range w.errs {
		r.errs[k] += v
	}
	r.mu.Unlock()
}
