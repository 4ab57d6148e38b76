package bench

import (
	"bytes"
	"context"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/internal/leakcheck"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeServeEnv) != "" {
		fakeServeMain()
		return
	}
	if os.Getenv(fakeBenchEnv) != "" {
		fakeBenchMain()
		return
	}
	os.Exit(leakcheck.Main(m))
}

func hourPolicy(limit int64) *bucket.Policy {
	return &bucket.Policy{Name: "t", Limit: limit, Window: time.Hour}
}

func TestAccuracyCatchesOverAdmission(t *testing.T) {
	for _, batch := range []int{1, 7} {
		target := newCountingTarget(5, 3) // 3 hits too many per key
		res, err := Run(context.Background(), Config{
			Target: target, Policy: "t", PolicySpec: hourPolicy(5),
			Keys: 20, Requests: 2000, Concurrency: 8, Batch: batch, Seed: 1, Duration: 30 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		a := res.Accuracy
		if a.Mode != AccuracyRun || a.Keys != 20 {
			t.Fatalf("batch %d: mode %s keys %d, want run and 20", batch, a.Mode, a.Keys)
		}
		if a.OverAdmitted != 3*20 || a.KeysOver != 20 || a.MaxOver != 3 || a.UnderAdmitted != 0 {
			t.Errorf("batch %d: over %d on %d keys (max %d), under %d; want over 60 on 20 keys (max 3), under 0",
				batch, a.OverAdmitted, a.KeysOver, a.MaxOver, a.UnderAdmitted)
		}
		if res.Allowed != 8*20 || res.Checks != 2000 || res.Allowed+res.Denied != 2000 {
			t.Errorf("batch %d: allowed %d denied %d checks %d", batch, res.Allowed, res.Denied, res.Checks)
		}
	}
}

func TestAccuracyCatchesUnderAdmission(t *testing.T) {
	target := newCountingTarget(10, -4) // denies 4 checks a key it should allow
	res, err := Run(context.Background(), Config{
		Target: target, Policy: "t", PolicySpec: hourPolicy(10),
		Keys: 16, Requests: 1600, Concurrency: 4, Seed: 2, Duration: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	a := res.Accuracy
	if a.UnderAdmitted != 4*16 || a.OverAdmitted != 0 || a.Keys != 16 || a.Allowance != 160 || a.AllowedHits != 6*16 {
		t.Errorf("under %d over %d keys %d allowance %d allowed %d; want 64, 0, 16, 160, 96",
			a.UnderAdmitted, a.OverAdmitted, a.Keys, a.Allowance, a.AllowedHits)
	}
}

func TestAccuracyExactTargetAndHits(t *testing.T) {
	target := newCountingTarget(9, 0)
	res, err := Run(context.Background(), Config{
		Target: target, Policy: "t", PolicySpec: hourPolicy(9), Hits: 2,
		Keys: 5, Requests: 500, Concurrency: 3, Seed: 3, Duration: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	// 9 allows four checks of 2 hits; the fifth (10 > 9) is rightly denied.
	a := res.Accuracy
	if a.OverAdmitted != 0 || a.UnderAdmitted != 0 || a.AllowedHits != 5*8 {
		t.Errorf("over %d under %d allowed hits %d; want 0, 0, 40", a.OverAdmitted, a.UnderAdmitted, a.AllowedHits)
	}
}

func TestAccuracyFixedWindows(t *testing.T) {
	p := &bucket.Policy{Name: "t", Algorithm: bucket.FixedWindow, Limit: 2, Window: time.Second}
	keys := []string{"a", "b"}
	a := newAccounting(p, keys, 1)
	w0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return w0.Add(time.Duration(ms) * time.Millisecond) }
	// Window 0: key a allowed 3 times (one over), key b allowed once and
	// denied once (one under).
	for i := 0; i < 3; i++ {
		a.record(0, true, at(10*i), at(10*i+1))
	}
	a.record(1, true, at(50), at(51))
	a.record(1, false, at(60), at(61))
	// Window 1: key a exact; key b has a check straddling the edge, so its
	// window is left out.
	a.record(0, true, at(1100), at(1101))
	a.record(0, true, at(1200), at(1201))
	a.record(0, false, at(1300), at(1301))
	a.record(1, true, at(990), at(1010))
	a.record(1, true, at(1400), at(1401))
	a.record(1, true, at(1500), at(1501))
	a.record(1, true, at(1600), at(1601))
	r := a.result(2 * time.Second)
	if r.Mode != AccuracyFixed || len(r.Windows) != 2 {
		t.Fatalf("mode %s with %d windows", r.Mode, len(r.Windows))
	}
	if r.OverAdmitted != 1 || r.UnderAdmitted != 1 || r.Ambiguous != 1 || r.Keys != 2 {
		t.Errorf("over %d under %d ambiguous %d keys %d; want 1 1 1 2", r.OverAdmitted, r.UnderAdmitted, r.Ambiguous, r.Keys)
	}
	w := r.Windows
	if w[0].OverAdmitted != 1 || w[0].UnderAdmitted != 1 || w[1].OverAdmitted != 0 || w[1].Ambiguous != 1 || w[1].Allowed != 2 {
		t.Errorf("windows %+v", w)
	}
	if !w[0].Start.Equal(w0) {
		t.Errorf("window 0 starts %v, want %v", w[0].Start, w0)
	}
}

func TestAccuracyBoundForRates(t *testing.T) {
	p := &bucket.Policy{Name: "t", Algorithm: bucket.GCRA, Limit: 10, Window: time.Second, Burst: 4}
	a := newAccounting(p, []string{"k"}, 1)
	now := time.Unix(0, 0)
	// Over 2 s the most is burst+1 = 5 at once, plus 20 refilled, plus one
	// for the edge: 26. Allow 30.
	for i := 0; i < 30; i++ {
		a.record(0, true, now, now)
	}
	r := a.result(2 * time.Second)
	if r.Mode != AccuracyBound || r.Allowance != 26 || r.OverAdmitted != 4 {
		t.Errorf("mode %s allowance %d over %d; want bound 26 4", r.Mode, r.Allowance, r.OverAdmitted)
	}
	// A sliding window shorter than the run becomes a bound too.
	s := newAccounting(&bucket.Policy{Name: "t", Limit: 3, Window: time.Second}, []string{"k"}, 1)
	for i := 0; i < 7; i++ {
		s.record(0, true, now, now)
	}
	if r := s.result(1500 * time.Millisecond); r.Mode != AccuracyBound || r.Allowance != 6 || r.OverAdmitted != 1 {
		t.Errorf("sliding: mode %s allowance %d over %d; want bound 6 1", r.Mode, r.Allowance, r.OverAdmitted)
	}
}

func TestRunStopsAtRequests(t *testing.T) {
	for _, tc := range []struct {
		batch int
		rate  float64
	}{{1, 0}, {7, 0}, {1, 50_000}, {10, 50_000}} {
		target := &batchingTarget{countingTarget: newCountingTarget(1, 0)}
		start := time.Now()
		res, err := Run(context.Background(), Config{
			Target: target, Policy: "t", Requests: 1000, Batch: tc.batch, Rate: tc.rate,
			Concurrency: 4, Duration: 30 * time.Second, Seed: 4,
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Checks != 1000 || target.calls != 1000 {
			t.Errorf("batch %d rate %v: %d checks, %d at the target; want 1000", tc.batch, tc.rate, res.Checks, target.calls)
		}
		if wantCalls := int64((1000 + tc.batch - 1) / tc.batch); res.Calls != wantCalls {
			t.Errorf("batch %d: %d calls, want %d", tc.batch, res.Calls, wantCalls)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("batch %d rate %v: took %v: did not stop at the count", tc.batch, tc.rate, d)
		}
	}
}

func TestRunStopsAtDuration(t *testing.T) {
	for _, rate := range []float64{0, 5000} {
		start := time.Now()
		res, err := Run(context.Background(), Config{
			Target: newCountingTarget(1, 0), Policy: "t", Duration: 300 * time.Millisecond,
			Concurrency: 2, Rate: rate, Seed: 5,
		})
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if took < 300*time.Millisecond || took > 5*time.Second {
			t.Errorf("rate %v: took %v, want about 300ms", rate, took)
		}
		if res.Elapsed.D() < 300*time.Millisecond || res.Checks == 0 {
			t.Errorf("rate %v: elapsed %v with %d checks", rate, res.Elapsed.D(), res.Checks)
		}
		var sum int64
		for _, p := range res.Series {
			sum += p.Checks
		}
		if sum != res.Checks {
			t.Errorf("rate %v: series sums to %d, checks %d", rate, sum, res.Checks)
		}
	}
}

// slowTarget answers after its delay or when ctx ends.
type slowTarget struct{ delay time.Duration }

func (s slowTarget) Check(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return bucket.Decision{Allowed: true}, nil
	case <-ctx.Done():
		return bucket.Decision{}, ctx.Err()
	}
}

func (slowTarget) Close(context.Context) error { return nil }

func TestRunInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, Config{
		Target: slowTarget{delay: time.Hour}, Policy: "t", Duration: time.Minute, Concurrency: 3,
		Progress: func(p Progress) { cancel() }, ProgressInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || time.Since(start) > 10*time.Second {
		t.Errorf("interrupted %v after %v", res.Interrupted, time.Since(start))
	}
	if res.Errors != 0 {
		t.Errorf("%d errors: the cancellation of an ending run counted as failures", res.Errors)
	}
}

func TestRunCancelsStragglersAfterGrace(t *testing.T) {
	start := time.Now()
	res, err := Run(context.Background(), Config{
		Target: slowTarget{delay: time.Hour}, Policy: "t", Duration: 100 * time.Millisecond,
		Grace: 100 * time.Millisecond, Concurrency: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v with calls that never answer", d)
	}
	if res.Interrupted {
		t.Error("a run that reached its bound is marked interrupted")
	}
}

func TestDispatchKeepsRate(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		batch int
		want  int64
	}{{1000, 1, 2000}, {1000, 10, 200}, {333, 1, 666}, {1e6, 100, 20_000}} {
		clk := &fakeClock{now: time.Unix(100, 0)}
		r := &runner{cfg: Config{Rate: tc.rate, Batch: tc.batch, Concurrency: 4, clock: clk}}
		r.start = clk.Now()
		r.end = r.start.Add(2 * time.Second)
		r.budget.Store(1 << 62)
		jobs := make(chan time.Time, 4)
		got := make(chan []time.Time)
		go func() {
			var ts []time.Time
			for due := range jobs {
				ts = append(ts, due)
			}
			got <- ts
		}()
		r.dispatch(context.Background(), jobs)
		close(jobs)
		ts := <-got
		if int64(len(ts)) != tc.want || r.gen.Scheduled != tc.want {
			t.Errorf("rate %v batch %d: %d calls scheduled in 2s, want %d", tc.rate, tc.batch, len(ts), tc.want)
			continue
		}
		// The schedule is evenly spaced from the start, not from when each
		// call went out.
		gap := time.Duration(float64(time.Second) * float64(tc.batch) / tc.rate)
		for i, due := range ts {
			if want := r.start.Add(time.Duration(float64(i) * float64(gap))); due.Sub(want).Abs() > time.Microsecond {
				t.Fatalf("call %d due at %v, want %v", i, due.Sub(r.start), want.Sub(r.start))
			}
		}
	}
}

func TestOpenLoopRateRealTime(t *testing.T) {
	res, err := Run(context.Background(), Config{
		Target: newCountingTarget(1, 0), Policy: "t", Rate: 2000, Duration: 500 * time.Millisecond,
		Concurrency: 4, Seed: 6,
	})
	if err != nil {
		t.Fatal(err)
	}
	// 2000/s for 0.5 s is 1000 sends; a generous bound holds on a busy
	// machine since late sends are still sent.
	if res.Checks < 800 || res.Checks > 1001 {
		t.Errorf("%d checks in an open loop of 2000/s for 500ms, want about 1000", res.Checks)
	}
	if res.Generator.Mode != "open" || res.Generator.Scheduled != res.Calls {
		t.Errorf("generator %+v, calls %d", res.Generator, res.Calls)
	}
}

func TestOpenLoopMeasuresFromSchedule(t *testing.T) {
	// One caller; the target stalls 200ms on its first call. In a closed
	// loop only that call would be slow; in an open loop of 1000/s the ~200
	// calls scheduled during the stall are late by up to 200ms.
	target := &firstSlow{delay: 200 * time.Millisecond}
	res, err := Run(context.Background(), Config{
		Target: target, Policy: "t", Rate: 1000, Duration: 400 * time.Millisecond, Concurrency: 1, Seed: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	// About half the calls were scheduled during the stall, late by 100 ms
	// on average: the mean is near 50 ms and p90 above 100 ms. Measured from
	// the actual send, both would be near zero.
	if res.Latency.Mean < 20_000 || res.Latency.P90 < 100_000 {
		t.Errorf("mean %.0fµs p90 %.0fµs after a 200ms stall: latency is not measured from the schedule", res.Latency.Mean, res.Latency.P90)
	}
	if res.Generator.Late == 0 || res.Generator.MaxLagMS < 100 {
		t.Errorf("generator %+v: the stall did not show as late sends", res.Generator)
	}
}

type firstSlow struct {
	delay time.Duration
	done  atomic.Bool
}

func (f *firstSlow) Check(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	if f.done.CompareAndSwap(false, true) {
		time.Sleep(f.delay) // the stall under test, not synchronisation
	}
	return bucket.Decision{Allowed: true}, nil
}

func (f *firstSlow) Close(context.Context) error { return nil }

func TestResultJSONRoundTripAndCompare(t *testing.T) {
	res, err := Run(context.Background(), Config{
		Target: newCountingTarget(3, 0), Policy: "t", PolicySpec: hourPolicy(3),
		Keys: 10, Requests: 300, Concurrency: 2, Seed: 8, Params: Params{Target: "fake"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := res.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := ReadResult(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	res.Generator.MaxLag = 0
	if !reflect.DeepEqual(res, back) {
		t.Errorf("round trip differs:\n%+v\n%+v", res, back)
	}
	if back.Params.Seed != 8 || back.Params.Keys != 10 || back.Params.PolicySpec.Limit != 3 || back.Machine.GoVersion == "" {
		t.Errorf("params or machine lost: %+v %+v", back.Params, back.Machine)
	}
	// Compare: b with twice the throughput and half the p99 of a.
	b := *back
	b.DecisionsPerSec = res.DecisionsPerSec * 2
	b.Latency.P99 = res.Latency.P99 / 2
	var out bytes.Buffer
	if err := Compare(&out, res, &b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if !strings.Contains(lines[0], "fake") || !hasRow(lines, "decisions/s", "2.000") || !hasRow(lines, "latency p99", "0.500") {
		t.Errorf("compare output:\n%s", out.String())
	}
	var sum bytes.Buffer
	if err := res.WriteSummary(&sum); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"decisions/s", "p99.9", "over-admitted 0 hits", "under-admitted 0"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
}

func hasRow(lines []string, name, ratio string) bool {
	for _, l := range lines {
		f := strings.Fields(l)
		if strings.HasPrefix(l, name) && len(f) > 0 && f[len(f)-1] == ratio {
			return true
		}
	}
	return false
}

// The warm-up loads keys of its own and leaves the measured run's counts,
// latencies and accuracy as if it had not happened.
func TestWarmupIsNotMeasured(t *testing.T) {
	target := newCountingTarget(5, 0)
	res, err := Run(context.Background(), Config{
		Target: target, Policy: "t", PolicySpec: hourPolicy(5), KeyPrefix: "k:",
		Keys: 20, Requests: 500, Concurrency: 4, Seed: 2, Duration: 30 * time.Second,
		Warmup: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	w := res.Warmup
	if w == nil || w.Checks == 0 || w.Errors != 0 || w.Duration.D() != 200*time.Millisecond {
		t.Fatalf("warm-up %+v, want 200ms of checks without errors", w)
	}
	if res.Checks != 500 || res.Latency.Count != 500 || res.Allowed != 5*20 {
		t.Errorf("measured %d checks (%d latencies), %d allowed; want 500, 500, 100", res.Checks, res.Latency.Count, res.Allowed)
	}
	if a := res.Accuracy; a.OverAdmitted != 0 || a.UnderAdmitted != 0 {
		t.Errorf("accuracy over %d under %d after a warm-up, want 0 and 0", a.OverAdmitted, a.UnderAdmitted)
	}
	target.mu.Lock()
	defer target.mu.Unlock()
	if target.calls != int(w.Checks)+500 {
		t.Errorf("target saw %d checks, want warm-up %d + 500", target.calls, w.Checks)
	}
	warmKeys := 0
	for k := range target.used {
		if strings.HasPrefix(k, "k:warmup:") {
			warmKeys++
		} else if !strings.HasPrefix(k, "k:") {
			t.Errorf("key %q has neither prefix", k)
		}
	}
	if warmKeys == 0 || warmKeys == len(target.used) {
		t.Errorf("%d of %d keys are the warm-up's, want some but not all", warmKeys, len(target.used))
	}
	if res.Params.Warmup.D() != 200*time.Millisecond {
		t.Errorf("params record warm-up %v", res.Params.Warmup.D())
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{},
		{Target: slowTarget{}, Rate: -1},
		{Target: slowTarget{}, Requests: -1},
		{Target: slowTarget{}, Warmup: -time.Second},
		{Target: slowTarget{}, Policy: "a", PolicySpec: hourPolicy(1)},
	} {
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}
