package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/vibewell/ratelimit/bucket"
)

// ResultVersion is the version of the JSON form of Result.
const ResultVersion = 1

// Result is what a run measured: the JSON of `ratelimitd bench --json`.
type Result struct {
	Version int `json:"version"` // ResultVersion when written
	// Params are the run's exact parameters; Machine where it ran.
	Params  Params  `json:"params"`
	Machine Machine `json:"machine"`
	// Start is when the load started; Elapsed how long it ran.
	Start   time.Time `json:"start"`
	Elapsed Seconds   `json:"elapsed_s"`
	// Interrupted is true when the run was stopped before its bounds.
	Interrupted bool `json:"interrupted,omitempty"`
	// Calls counts the calls to the target (a batch is one call); Checks
	// counts checks: Allowed + Denied + Errors.
	Calls   int64 `json:"calls"`
	Checks  int64 `json:"checks"`
	Allowed int64 `json:"allowed"`
	Denied  int64 `json:"denied"`
	Errors  int64 `json:"errors"`
	// ErrorKinds counts errors by kind (see ErrorKind).
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	// DecisionsPerSec is (Allowed+Denied) / Elapsed; CallsPerSec Calls /
	// Elapsed.
	DecisionsPerSec float64 `json:"decisions_per_s"`
	CallsPerSec     float64 `json:"calls_per_s"`
	// Latency is the latency of a call, from its scheduled time in an open
	// loop.
	Latency Latency `json:"latency"`
	// Histogram is the latency distribution in logarithmic buckets.
	Histogram []Bucket `json:"histogram"`
	// Accuracy compares the decisions with each key's allowance.
	Accuracy Accuracy `json:"accuracy"`
	// Series is the run second by second.
	Series []Point `json:"series"`
	// Events are the scenario's events (node stopped, restarted, ...), each
	// with what happened around it.
	Events []Event `json:"events,omitempty"`
	// Generator describes the load model and how well the generator kept
	// its schedule.
	Generator Generator `json:"generator"`
	// ErrorTicks counts errors per 100 ms, for the recovery times.
	ErrorTicks []int64 `json:"error_ticks,omitempty"`
	// Warmup is what the unmeasured warm-up before the run did, if any.
	Warmup *Warmup `json:"warmup,omitempty"`
	// Flood is what the flood scenario saw, if it ran.
	Flood *FloodReport `json:"flood,omitempty"`
	// CPU is the nodes' CPU during the run (Config.CPU), if metered.
	CPU *NodesCPU `json:"cpu,omitempty"`
	// Baseline compares the cluster with one node, round by round, when
	// the run alternated them (ratelimitd bench --baseline); the rest of
	// the result is the cluster's last round.
	Baseline *Baseline `json:"baseline,omitempty"`
}

// Warmup sums up a run's warm-up: the same load on keys of its own, before
// the measured run, whose latencies and decisions are not in the result.
type Warmup struct {
	Duration Seconds `json:"duration_s"` // how long it ran
	Checks   int64   `json:"checks"`     // checks it sent, decided or failed
	Errors   int64   `json:"errors"`     // checks of those that failed
}

// Params describe a run as it was asked for.
type Params struct {
	Target   string   `json:"target"`             // embedded, http, redis, or a caller's name
	Nodes    int      `json:"nodes,omitempty"`    // nodes checked (in process, or URLs)
	URLs     []string `json:"urls,omitempty"`     // the http target's nodes
	Spawn    int      `json:"spawn,omitempty"`    // processes the bench started
	Scenario string   `json:"scenario,omitempty"` // churn scenario, if any
	// The workload, as Config describes it (defaults applied).
	Policy      string         `json:"policy"`
	PolicySpec  *bucket.Policy `json:"policy_spec,omitempty"`
	Hits        int64          `json:"hits"`
	Keys        int            `json:"keys"`
	Dist        Dist           `json:"dist"`
	ZipfS       float64        `json:"zipf_s,omitempty"`
	KeyPrefix   string         `json:"key_prefix"`
	Batch       int            `json:"batch"`
	Concurrency int            `json:"concurrency"`
	Rate        float64        `json:"rate,omitempty"`
	Duration    Seconds        `json:"duration_s"`
	Warmup      Seconds        `json:"warmup_s,omitempty"`
	Requests    int64          `json:"requests,omitempty"`
	Seed        uint64         `json:"seed"`
	// Command is the command line, when run from one.
	Command string `json:"command,omitempty"`
}

// Machine describes where a run ran.
type Machine struct {
	CPU        string `json:"cpu"`                // model name from /proc/cpuinfo, or "unknown"
	Cores      int    `json:"cores"`              // runtime.NumCPU
	GOMAXPROCS int    `json:"gomaxprocs"`         // of the bench process
	GoVersion  string `json:"go_version"`         // runtime.Version
	OS         string `json:"os"`                 // GOOS
	Arch       string `json:"arch"`               // GOARCH
	Hostname   string `json:"hostname,omitempty"` // os.Hostname
}

// Latency summarises call latencies, in microseconds.
type Latency struct {
	Count int64   `json:"count"`    // calls measured
	Mean  float64 `json:"mean_us"`  // the mean
	P50   float64 `json:"p50_us"`   // the median
	P90   float64 `json:"p90_us"`   // the 90th percentile
	P99   float64 `json:"p99_us"`   // the 99th percentile
	P999  float64 `json:"p99_9_us"` // the 99.9th percentile
	Max   float64 `json:"max_us"`   // the slowest call
}

// Bucket is one bar of the latency histogram: Count calls took up to UpTo
// microseconds (and more than the previous bucket's UpTo).
type Bucket struct {
	UpTo  float64 `json:"up_to_us"`
	Count int64   `json:"count"`
}

// Point is one second of a run.
type Point struct {
	// T is the second's start, from the run's start, in seconds.
	T float64 `json:"t"`
	// Len is the part of the second the run covered: 1, or less for the
	// last one. Rates are the counts divided by it.
	Len     float64 `json:"len_s"`
	Checks  int64   `json:"checks"`
	Allowed int64   `json:"allowed"`
	Denied  int64   `json:"denied"`
	Errors  int64   `json:"errors"`
	// P99 is the second's call latency p99 in microseconds.
	P99 float64 `json:"p99_us"`
}

// Event is something a scenario did during a run.
type Event struct {
	// At is when, from the run's start.
	At     Seconds `json:"at_s"`
	Kind   string  `json:"kind"`
	Node   string  `json:"node,omitempty"`
	Detail string  `json:"detail,omitempty"`
	// ErrorsAfter counts errors from the event until the next one (or the
	// end); RecoveredAfter is the time from the event to the end of the last
	// 100 ms with an error in that span (0: no error).
	ErrorsAfter    int64   `json:"errors_after"`
	RecoveredAfter Seconds `json:"recovered_after_s"`
}

// Generator describes the load model and its timeliness.
type Generator struct {
	// Mode is "closed" or "open".
	Mode string `json:"mode"`
	// Rate is the open loop's scheduled checks a second.
	Rate float64 `json:"rate,omitempty"`
	// Scheduled counts the open loop's scheduled calls; Late those that
	// waited for a free caller; MaxLag the longest a call started after its
	// scheduled time.
	Scheduled int64         `json:"scheduled,omitempty"`
	Late      int64         `json:"late,omitempty"`
	MaxLag    time.Duration `json:"-"`
	MaxLagMS  float64       `json:"max_lag_ms,omitempty"`
}

// Seconds is a duration that encodes in JSON as seconds.
type Seconds time.Duration

// MarshalJSON encodes s as a number of seconds.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(s).Seconds())
}

// UnmarshalJSON decodes a number of seconds.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*s = Seconds(math.Round(f * float64(time.Second))) // round, so a round trip keeps every nanosecond
	return nil
}

// D returns s as a time.Duration.
func (s Seconds) D() time.Duration { return time.Duration(s) }

// describe returns cfg.Params with the workload fields of cfg (defaults
// applied) filled in.
func (cfg Config) describe() Params {
	p := cfg.Params
	p.Policy, p.PolicySpec, p.Hits, p.Keys, p.Dist = cfg.Policy, cfg.PolicySpec, cfg.Hits, cfg.Keys, cfg.Dist
	p.ZipfS, p.KeyPrefix, p.Batch, p.Concurrency = cfg.ZipfS, cfg.KeyPrefix, cfg.Batch, cfg.Concurrency
	p.Rate, p.Duration, p.Requests, p.Seed = cfg.Rate, Seconds(cfg.Duration), cfg.Requests, cfg.Seed
	p.Warmup = Seconds(cfg.Warmup)
	if p.Dist == Zipf && p.ZipfS <= 1 {
		p.ZipfS = DefaultZipfS
	}
	return p
}

func (r *runner) result(finished time.Time, interrupted bool) *Result {
	elapsed := finished.Sub(r.start)
	res := &Result{
		Version:     ResultVersion,
		Params:      r.cfg.describe(),
		Machine:     DescribeMachine(),
		Start:       r.start.UTC(),
		Elapsed:     Seconds(elapsed),
		Interrupted: interrupted,
		Generator:   r.gen,
	}
	if res.Generator.Mode == "" {
		res.Generator.Mode = "closed"
	}
	res.Generator.MaxLagMS = float64(res.Generator.MaxLag) / 1e6
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) > 0 {
		res.ErrorKinds = r.errs
	}
	// The series: ticks summed to seconds, up to the last non-empty tick.
	last := -1
	for i := range r.ticks {
		if r.ticks[i].checks.Load() > 0 {
			last = i
		}
	}
	perSec := int(time.Second / tick)
	for i := 0; i <= last; i++ {
		s := &r.ticks[i]
		sec := i / perSec
		if sec == len(res.Series) {
			pt := Point{T: float64(sec)}
			if h := r.seconds[sec]; h != nil {
				pt.P99 = us(h.ValueAtQuantile(99))
			}
			res.Series = append(res.Series, pt)
		}
		pt := &res.Series[sec]
		pt.Checks += s.checks.Load()
		pt.Allowed += s.allowed.Load()
		pt.Denied += s.denied.Load()
		pt.Errors += s.errors.Load()
		res.ErrorTicks = append(res.ErrorTicks, s.errors.Load())
		res.Checks += s.checks.Load()
		res.Allowed += s.allowed.Load()
		res.Denied += s.denied.Load()
		res.Errors += s.errors.Load()
	}
	if res.Errors == 0 {
		res.ErrorTicks = nil
	}
	for i := range res.Series {
		res.Series[i].Len = min(max(elapsed.Seconds()-res.Series[i].T, 0), 1)
	}
	res.Calls = r.total.TotalCount()
	if secs := elapsed.Seconds(); secs > 0 {
		res.DecisionsPerSec = float64(res.Allowed+res.Denied) / secs
		res.CallsPerSec = float64(res.Calls) / secs
	}
	res.Latency = latencyOf(r.total)
	res.Histogram = histogramOf(r.total)
	res.Accuracy = r.acc.result(elapsed)
	res.Events = eventsWithRecovery(r.events, res.ErrorTicks)
	return res
}

func us(ns int64) float64 { return float64(ns) / 1e3 }

func latencyOf(h *hdr.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1e3,
		P50:   us(h.ValueAtQuantile(50)),
		P90:   us(h.ValueAtQuantile(90)),
		P99:   us(h.ValueAtQuantile(99)),
		P999:  us(h.ValueAtQuantile(99.9)),
		Max:   us(h.Max()),
	}
}

// histogramOf buckets h in steps of a quarter power of two (about 19%
// wide), from its smallest to its largest value.
func histogramOf(h *hdr.Histogram) []Bucket {
	if h.TotalCount() == 0 {
		return nil
	}
	var out []Bucket
	bound := 1.0
	for _, bar := range h.Distribution() {
		if bar.Count == 0 {
			continue
		}
		v := float64(bar.To)
		for bound < v {
			bound *= 1.189207115 // 2^(1/4)
		}
		if n := len(out); n > 0 && out[n-1].UpTo == bound/1e3 {
			out[n-1].Count += bar.Count
		} else {
			out = append(out, Bucket{UpTo: bound / 1e3, Count: bar.Count})
		}
	}
	return out
}

// eventsWithRecovery fills in what followed each event: the errors until
// the next event and when the last of them happened.
func eventsWithRecovery(evs []Event, errTicks []int64) []Event {
	out := append([]Event(nil), evs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	// Tick t (its errors counted at its end) goes to the last event before
	// its end, so each tick counts once.
	for i := range out {
		from := out[i].At.D()
		to := time.Duration(math.MaxInt64)
		if i+1 < len(out) {
			to = out[i+1].At.D()
		}
		for t := int(from / tick); t < len(errTicks); t++ {
			end := time.Duration(t+1) * tick
			if end > to {
				break
			}
			if errTicks[t] > 0 {
				out[i].ErrorsAfter += errTicks[t]
				out[i].RecoveredAfter = Seconds(max(time.Duration(t+1)*tick-from, 0))
			}
		}
	}
	return out
}

// DescribeMachine describes this machine: the CPU model from /proc/cpuinfo
// (where there is one), cores, GOMAXPROCS, Go version and OS.
func DescribeMachine() Machine {
	m := Machine{
		Cores:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
		OS:         runtime.GOOS,
		Arch:       runtime.GOARCH,
		CPU:        "unknown",
	}
	m.Hostname, _ = os.Hostname()
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			k, v, ok := strings.Cut(s.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// WriteJSON writes r as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ReadResult reads a Result written by WriteJSON.
func ReadResult(rd io.Reader) (*Result, error) {
	var r Result
	dec := json.NewDecoder(rd)
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("bench: read result: %w", err)
	}
	if r.Version != ResultVersion {
		return nil, fmt.Errorf("bench: read result: version %d, want %d", r.Version, ResultVersion)
	}
	return &r, nil
}

// WriteSummary writes the human-readable summary table of r.
func (r *Result) WriteSummary(w io.Writer) error {
	p := r.Params
	var b strings.Builder
	fmt.Fprintf(&b, "target       %s", p.Target)
	if p.Nodes > 0 {
		fmt.Fprintf(&b, ", %d node(s)", p.Nodes)
	}
	if p.Spawn > 0 {
		fmt.Fprintf(&b, ", %d spawned", p.Spawn)
	}
	if p.Scenario != "" && p.Scenario != "none" {
		fmt.Fprintf(&b, ", scenario %s", p.Scenario)
	}
	b.WriteString("\n")
	load := fmt.Sprintf("closed loop, %d callers", p.Concurrency)
	if r.Generator.Mode == "open" {
		load = fmt.Sprintf("open loop at %.0f checks/s, up to %d in flight", p.Rate, p.Concurrency)
	}
	fmt.Fprintf(&b, "workload     policy %s, %d key(s) %s, hits %d, batch %d; %s\n", p.Policy, p.Keys, p.Dist, p.Hits, p.Batch, load)
	fmt.Fprintf(&b, "machine      %s, %d cores, GOMAXPROCS %d, %s %s/%s\n", r.Machine.CPU, r.Machine.Cores, r.Machine.GOMAXPROCS, r.Machine.GoVersion, r.Machine.OS, r.Machine.Arch)
	fmt.Fprintf(&b, "elapsed      %.2fs", r.Elapsed.D().Seconds())
	if r.Interrupted {
		b.WriteString(" (interrupted)")
	}
	if w := r.Warmup; w != nil {
		fmt.Fprintf(&b, ", after a warm-up of %.2fs (%d checks, %d errors, not measured)", w.Duration.D().Seconds(), w.Checks, w.Errors)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "throughput   %s decisions/s, %s calls/s\n", human(r.DecisionsPerSec), human(r.CallsPerSec))
	fmt.Fprintf(&b, "checks       %d: allowed %d, denied %d, errors %d\n", r.Checks, r.Allowed, r.Denied, r.Errors)
	if len(r.ErrorKinds) > 0 {
		kinds := make([]string, 0, len(r.ErrorKinds))
		for k := range r.ErrorKinds {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		b.WriteString("errors by kind")
		for _, k := range kinds {
			fmt.Fprintf(&b, "  %s %d", k, r.ErrorKinds[k])
		}
		b.WriteString("\n")
	}
	l := r.Latency
	fmt.Fprintf(&b, "latency      p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (per call)\n",
		fmtUS(l.P50), fmtUS(l.P90), fmtUS(l.P99), fmtUS(l.P999), fmtUS(l.Max))
	if g := r.Generator; g.Mode == "open" {
		fmt.Fprintf(&b, "generator    %d calls scheduled, %d late (all callers busy), max lag %.1f ms\n", g.Scheduled, g.Late, g.MaxLagMS)
	}
	if r.Flood != nil {
		r.Flood.writeSummary(&b)
	}
	a := r.Accuracy
	if a.Mode == AccuracyNone {
		fmt.Fprintf(&b, "accuracy     not accounted: %s\n", a.Note)
	} else {
		fmt.Fprintf(&b, "accuracy     [%s] %d keys, allowed %d hits of allowance %d: over-admitted %d hits (%d keys, max %d)",
			a.Mode, a.Keys, a.AllowedHits, a.Allowance, a.OverAdmitted, a.KeysOver, a.MaxOver)
		if a.Mode != AccuracyBound {
			fmt.Fprintf(&b, ", under-admitted %d checks", a.UnderAdmitted)
		}
		if a.Ambiguous > 0 {
			fmt.Fprintf(&b, ", %d checks straddled a window edge", a.Ambiguous)
		}
		b.WriteString("\n")
	}
	if r.CPU != nil {
		r.CPU.writeSummary(&b)
	}
	if r.Baseline != nil {
		r.Baseline.writeSummary(&b)
	}
	for _, e := range r.Events {
		fmt.Fprintf(&b, "event %6.1fs %s %s %s: %d errors after, recovered after %.1fs\n",
			e.At.D().Seconds(), e.Kind, e.Node, e.Detail, e.ErrorsAfter, e.RecoveredAfter.D().Seconds())
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func fmtUS(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fs", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.2fms", v/1e3)
	default:
		return fmt.Sprintf("%.1fµs", v)
	}
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// Compare writes the figures of a and b side by side, with b/a ratios.
func Compare(w io.Writer, a, b *Result) error {
	type row struct {
		name   string
		va, vb float64
		unit   string
	}
	rows := []row{
		{"decisions/s", a.DecisionsPerSec, b.DecisionsPerSec, ""},
		{"calls/s", a.CallsPerSec, b.CallsPerSec, ""},
		{"latency p50", a.Latency.P50, b.Latency.P50, "µs"},
		{"latency p90", a.Latency.P90, b.Latency.P90, "µs"},
		{"latency p99", a.Latency.P99, b.Latency.P99, "µs"},
		{"latency p99.9", a.Latency.P999, b.Latency.P999, "µs"},
		{"latency max", a.Latency.Max, b.Latency.Max, "µs"},
		{"checks", float64(a.Checks), float64(b.Checks), ""},
		{"allowed", float64(a.Allowed), float64(b.Allowed), ""},
		{"denied", float64(a.Denied), float64(b.Denied), ""},
		{"errors", float64(a.Errors), float64(b.Errors), ""},
		{"over-admitted", float64(a.Accuracy.OverAdmitted), float64(b.Accuracy.OverAdmitted), "hits"},
		{"under-admitted", float64(a.Accuracy.UnderAdmitted), float64(b.Accuracy.UnderAdmitted), "checks"},
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-16s %16s %16s %10s\n", "", describe(a), describe(b), "b/a")
	for _, r := range rows {
		ratio := "-"
		if r.va != 0 {
			ratio = fmt.Sprintf("%.3f", r.vb/r.va)
		}
		fmt.Fprintf(&sb, "%-16s %16s %16s %10s\n", r.name, num(r.va, r.unit), num(r.vb, r.unit), ratio)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

func describe(r *Result) string {
	s := r.Params.Target
	if r.Params.Batch > 1 {
		s += fmt.Sprintf(" b%d", r.Params.Batch)
	}
	if r.Generator.Mode == "open" {
		s += " open"
	}
	if len(s) > 16 {
		s = s[:16]
	}
	return s
}

func num(v float64, unit string) string {
	if unit == "µs" {
		return fmtUS(v)
	}
	if v == float64(int64(v)) && v < 1e7 {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}
