package redisstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/vibewell/ratelimit/bucket"
)

// loadResult is what a load run saw.
type loadResult struct {
	ok, failed, fast int           // fast: failures answered in under 50ms
	slow             int           // calls that took over half the timeout
	longest          time.Duration // the longest call
	badErr           error         // an error that does not wrap bucket.ErrBackend
}

// runLoad runs workers goroutines that check keys of s until stop is
// closed, each at most once per millisecond and at most maxCalls times, and
// measures every call.
func runLoad(s *Store, workers, maxCalls int, timeout time.Duration, stop <-chan struct{}) loadResult {
	var (
		mu  sync.Mutex
		res loadResult
		wg  sync.WaitGroup
	)
	p := bucket.Policy{Name: "load", Algorithm: bucket.GCRA, Limit: 1000, Window: time.Second, Burst: 1000}
	for w := range workers {
		wg.Go(func() {
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for i := range maxCalls {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				k := bucket.Key{Policy: "load", ID: strconv.Itoa(w*maxCalls + i%100)}
				start := time.Now()
				_, err := s.Take(context.Background(), k, p, 1, start)
				took := time.Since(start)
				mu.Lock()
				res.longest = max(res.longest, took)
				if took > timeout/2 {
					res.slow++
				}
				switch {
				case err == nil:
					res.ok++
				case !errors.Is(err, bucket.ErrBackend) || !errors.Is(err, ErrUnavailable):
					res.badErr = err
					res.failed++
				default:
					res.failed++
					if took < 50*time.Millisecond {
						res.fast++
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return res
}

// waitFor polls cond every 10ms until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

func checkOK(s *Store) bool {
	p := bucket.Policy{Name: "p", Limit: 1000, Window: time.Second}
	_, err := s.Take(context.Background(), bucket.Key{Policy: "p", ID: "probe"}, p, 1, time.Now())
	return err == nil
}

// watchSchedulingLag sleeps 10 ms at a time until stop is closed, then
// sends how much later than asked its longest sleep woke.
func watchSchedulingLag(stop <-chan struct{}) <-chan time.Duration {
	out := make(chan time.Duration, 1)
	go func() {
		var worst time.Duration
		for {
			select {
			case <-stop:
				out <- worst
				return
			default:
			}
			t0 := time.Now()
			time.Sleep(10 * time.Millisecond) // the probe's period
			worst = max(worst, time.Since(t0)-10*time.Millisecond)
		}
	}()
	return out
}

// The margin a call may take past the timeout: scheduling on a loaded
// 2-core machine under the race detector.
const margin = 150 * time.Millisecond

// TestKilledMidLoad: Redis is killed (SIGKILL) under load: no check waits
// past the timeout, every error wraps bucket.ErrBackend, the breaker opens
// and failures are counted; Redis restarted on the same port: checks
// recover without a new store.
func TestKilledMidLoad(t *testing.T) {
	srv := startRedis(t, false)
	reg := prometheus.NewRegistry()
	const timeout = 400 * time.Millisecond
	s := newTestStore(t, srv.url(), func(o *Options) {
		o.Timeout = timeout
		o.BreakerCooldown = 100 * time.Millisecond
		o.Metrics = reg
		o.UseCallerTime = false
	})

	stop := make(chan struct{})
	done := make(chan loadResult)
	lag := watchSchedulingLag(stop)
	go func() { done <- runLoad(s, 8, 5000, timeout, stop) }()
	waitFor(t, 5*time.Second, "checks succeed before the kill", func() bool {
		return value(s.metrics.errors.WithLabelValues(reasonUnavailable)) == 0 && checkOK(s)
	})
	time.Sleep(100 * time.Millisecond) // let the load run against a live Redis
	srv.kill()
	waitFor(t, 5*time.Second, "breaker opens", s.breaker.isOpen)
	if value(s.metrics.breakerOpen) != 1 {
		t.Fatal("breaker gauge not 1 while open")
	}
	time.Sleep(500 * time.Millisecond) // keep the load on a dead Redis
	close(stop)
	res := <-done
	t.Logf("while killed: %+v", res)
	if res.badErr != nil {
		t.Fatalf("an error does not wrap bucket.ErrBackend and ErrUnavailable: %v", res.badErr)
	}
	if res.ok == 0 || res.failed == 0 || res.fast == 0 {
		t.Fatalf("want successes before the kill, then failures, some refused at once: %+v", res)
	}
	// A goroutine that the machine did not run for a while is late by as
	// much, whatever the store does: that lag, measured beside the load,
	// is allowed on top of the margin.
	if late := <-lag; res.longest > timeout+margin+late {
		t.Fatalf("a check took %v, past the timeout %v (the scheduler was at most %v late meanwhile)", res.longest, timeout, late)
	}
	failures := value(s.metrics.errors.WithLabelValues(reasonUnavailable)) +
		value(s.metrics.errors.WithLabelValues(reasonTimeout))
	refused := value(s.metrics.errors.WithLabelValues(reasonBreakerOpen))
	if failures == 0 || refused == 0 {
		t.Fatalf("errors counted: %v failures, %v refused by the breaker; want both", failures, refused)
	}

	srv.start()
	waitFor(t, 10*time.Second, "checks recover after the restart", func() bool { return checkOK(s) })
	if s.breaker.isOpen() || value(s.metrics.breakerOpen) != 0 {
		t.Fatal("breaker still open after a successful check")
	}
	// The script cache of the new server is empty: the check above went
	// through EVAL, and EVALSHA works again.
	if value(s.metrics.scriptLoads) == 0 {
		t.Fatal("no NOSCRIPT reload after the restart")
	}
	mustCheck(t, s)
}

// TestHungRedis: Redis stops answering (SIGSTOP) with connections open: the
// checks in flight fail at the timeout, then the breaker refuses at once,
// with one probe per cooldown; Redis answering again (SIGCONT) closes it.
func TestHungRedis(t *testing.T) {
	srv := startRedis(t, false)
	const (
		timeout  = 300 * time.Millisecond
		cooldown = 200 * time.Millisecond
		workers  = 4
		hung     = 1500 * time.Millisecond
	)
	s := newTestStore(t, srv.url(), func(o *Options) {
		o.Timeout = timeout
		o.BreakerCooldown = cooldown
		o.UseCallerTime = false
	})
	mustCheck(t, s)
	srv.signal(syscall.SIGSTOP)
	// A batch is one pipeline under the same deadline.
	checks := []bucket.Check{{Key: bucket.Key{Policy: "p", ID: "b"}, Policy: bucket.Policy{Name: "p", Limit: 9, Window: time.Second}, Hits: 1}}
	start := time.Now()
	err := s.TakeBatch(context.Background(), append(checks, checks...), time.Now(), make([]bucket.Decision, 2))
	if took := time.Since(start); took > timeout+margin || !errors.Is(err, bucket.ErrBackend) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("batch against a hung Redis: %v after %v, want ErrUnavailable within %v", err, took, timeout)
	}
	stop := make(chan struct{})
	done := make(chan loadResult)
	lag := watchSchedulingLag(stop)
	go func() { done <- runLoad(s, workers, 5000, timeout, stop) }()
	time.Sleep(hung) // the length of the outage under load
	close(stop)
	res := <-done
	srv.signal(syscall.SIGCONT)
	t.Logf("while hung: %+v", res)
	if res.badErr != nil {
		t.Fatalf("an error does not wrap bucket.ErrBackend and ErrUnavailable: %v", res.badErr)
	}
	// A goroutine that the machine did not run for a while is late by as
	// much, whatever the store does: that lag, measured beside the load,
	// is allowed on top of the margin.
	if late := <-lag; res.longest > timeout+margin+late {
		t.Fatalf("a check took %v, past the timeout %v (the scheduler was at most %v late meanwhile)", res.longest, timeout, late)
	}
	// Without the breaker every call would wait the timeout: about
	// workers × hung/timeout = 20 slow calls. With it, the first ones in
	// flight and one probe per cooldown+timeout.
	if maxSlow := workers + int(hung/(cooldown+timeout)) + 3; res.slow > maxSlow {
		t.Fatalf("%d calls waited for the hung Redis, want at most %d: the breaker does not cut them short", res.slow, maxSlow)
	}
	if res.fast < 100 {
		t.Fatalf("only %d calls refused at once while the breaker was open", res.fast)
	}
	waitFor(t, 10*time.Second, "checks recover after SIGCONT", func() bool { return checkOK(s) })
}

// TestServerTime: in server-time mode, two stores whose callers pass
// wildly different times share one counter as if one clock ruled.
func TestServerTime(t *testing.T) {
	url := testURL(t)
	a := newTestStore(t, url, func(o *Options) { o.UseCallerTime = false })
	b := newTestStore(t, url, func(o *Options) { o.UseCallerTime = false; o.Prefix = a.opts.Prefix })
	ctx := context.Background()
	past := time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC)
	future := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, p := range []bucket.Policy{
		{Name: "sw", Limit: 5, Window: time.Hour},
		{Name: "gcra", Algorithm: bucket.GCRA, Limit: 1, Window: time.Hour, Burst: 4},
		{Name: "tb", Algorithm: bucket.TokenBucket, Limit: 5, Window: time.Hour},
		{Name: "fw", Algorithm: bucket.FixedWindow, Limit: 5, Window: time.Hour},
	} {
		k := bucket.Key{Policy: p.Name, ID: "shared"}
		for i := range 8 {
			s, now := a, past
			if i%2 == 1 {
				s, now = b, future
			}
			d, err := s.Take(ctx, k, p, 1, now)
			if err != nil {
				t.Fatal(err)
			}
			wantAllowed := i < 5
			if d.Allowed != wantAllowed || d.Remaining != max(0, 4-int64(i)) {
				t.Fatalf("%s: check %d (store %c): %+v, want allowed=%v remaining=%d", p.Name, i, "ab"[i%2], d, wantAllowed, max(0, 4-i))
			}
			// Counted from the server's now, the reset is within the
			// policy's span; from the callers' nows it would be decades off.
			span := max(p.Window+p.Window/bucket.Slots, time.Duration(p.Capacity())*(p.Window/time.Duration(p.Limit)))
			if d.ResetAfter <= 0 || d.ResetAfter > span {
				t.Fatalf("%s: reset-after %v is not counted from the server's now", p.Name, d.ResetAfter)
			}
		}
	}
}

// TestScriptFlushed: after SCRIPT FLUSH, single checks (EVAL fallback)
// and batches (load, then the refused checks again) still work, and every
// check counts once.
func TestScriptFlushed(t *testing.T) {
	srv := startRedis(t, false)
	reg := prometheus.NewRegistry()
	s := newTestStore(t, srv.url(), func(o *Options) { o.Metrics = reg })
	rc := redis.NewClient(&redis.Options{Addr: srv.addr(), DisableIdentity: true})
	defer rc.Close()
	ctx := context.Background()
	p := bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}
	now := time.Now()

	if err := rc.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	d, err := s.Take(ctx, bucket.Key{Policy: "p", ID: "single"}, p, 3, now)
	if err != nil || d.Remaining != 7 {
		t.Fatalf("check after SCRIPT FLUSH: %+v, %v", d, err)
	}
	if err := rc.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	checks := make([]bucket.Check, 5)
	for i := range checks {
		checks[i] = bucket.Check{Key: bucket.Key{Policy: "p", ID: "batch"}, Policy: p, Hits: 2}
	}
	out := make([]bucket.Decision, len(checks))
	if err := s.TakeBatch(ctx, checks, now, out); err != nil {
		t.Fatalf("batch after SCRIPT FLUSH: %v", err)
	}
	for i, d := range out {
		if want := int64(8 - 2*i); !d.Allowed || d.Remaining != want {
			t.Fatalf("batch check %d: %+v, want remaining %d", i, d, want)
		}
	}
	if n := value(s.metrics.scriptLoads); n != 2 {
		t.Fatalf("script loads counted: %v, want 2", n)
	}
}

func TestBatchErrors(t *testing.T) {
	s := newTestStore(t, testURL(t))
	ctx := context.Background()
	p := bucket.Policy{Name: "p", Limit: 3, Window: time.Minute}
	if err := s.TakeBatch(ctx, nil, time.Now(), nil); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
	checks := []bucket.Check{{Key: bucket.Key{Policy: "p", ID: "a"}, Policy: p, Hits: 1}}
	if err := s.TakeBatch(ctx, checks, time.Now(), nil); err == nil || errors.Is(err, bucket.ErrBackend) {
		t.Fatalf("batch with no room for decisions: %v", err)
	}
	bad := append(checks, bucket.Check{Key: bucket.Key{Policy: "q", ID: "a"}, Policy: bucket.Policy{Name: "q", Window: time.Second}, Hits: 1})
	if err := s.TakeBatch(ctx, bad, time.Now(), make([]bucket.Decision, 2)); !errors.Is(err, bucket.ErrInvalidPolicy) {
		t.Fatalf("batch with an invalid policy: %v", err)
	}
	// Nothing of the refused batch counted.
	d, err := s.Take(ctx, checks[0].Key, p, 0, time.Now())
	if err != nil || d.Remaining != 3 {
		t.Fatalf("after refused batches: %+v %v, want nothing counted", d, err)
	}
}

// TestCallerCanceled: a caller's canceled context fails the check but says
// nothing about Redis: the breaker stays closed.
func TestCallerCanceled(t *testing.T) {
	s := newTestStore(t, testURL(t), func(o *Options) { o.BreakerFailures = 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := bucket.Policy{Name: "p", Limit: 3, Window: time.Minute}
	_, err := s.Take(ctx, bucket.Key{Policy: "p", ID: "a"}, p, 1, time.Now())
	if !errors.Is(err, context.Canceled) || !errors.Is(err, bucket.ErrBackend) {
		t.Fatalf("canceled check: %v", err)
	}
	if s.breaker.isOpen() {
		t.Fatal("a canceled check opened the breaker")
	}
	mustCheck(t, s)
}

func TestBreaker(t *testing.T) {
	now := time.Unix(0, 0)
	var changes []bool
	b := newBreaker(3, time.Second, func() time.Time { return now }, func(open bool) { changes = append(changes, open) })
	allow := func(wantOK, wantProbe bool) {
		t.Helper()
		ok, probe := b.allow()
		if ok != wantOK || probe != wantProbe {
			t.Fatalf("allow() = %v, %v; want %v, %v", ok, probe, wantOK, wantProbe)
		}
	}
	allow(true, false)
	b.failure(false)
	b.failure(false)
	b.success(false) // a success resets the count
	b.failure(false)
	b.failure(false)
	allow(true, false)
	b.failure(false)
	if !b.isOpen() || fmt.Sprint(changes) != "[true]" {
		t.Fatalf("after 3 consecutive failures: open=%v changes=%v", b.isOpen(), changes)
	}
	allow(false, false)
	now = now.Add(999 * time.Millisecond)
	allow(false, false)
	now = now.Add(time.Millisecond)
	allow(true, true)   // the probe
	allow(false, false) // only one
	b.failure(true)
	allow(false, false)
	now = now.Add(time.Second)
	allow(true, true)
	b.abandon(true) // the caller gave up: the next check probes at once
	allow(true, true)
	b.success(true)
	if b.isOpen() || fmt.Sprint(changes) != "[true false]" {
		t.Fatalf("after a good probe: open=%v changes=%v", b.isOpen(), changes)
	}
	allow(true, false)
}

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// TestFailureLogCapped: while Redis is down, failures are logged once per
// LogInterval with a count of the rest, and the breaker's opening once.
func TestFailureLogCapped(t *testing.T) {
	srv := startRedis(t, false)
	var buf syncBuffer
	s := newTestStore(t, srv.url(), func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&buf, nil))
		o.LogInterval = time.Hour
		o.Timeout = time.Second
	})
	mustCheck(t, s)
	srv.kill()
	p := bucket.Policy{Name: "p", Limit: 10, Window: time.Minute}
	for range 50 {
		if _, err := s.Take(context.Background(), bucket.Key{Policy: "p", ID: "k"}, p, 1, time.Now()); err == nil {
			t.Fatal("check succeeded against a killed Redis")
		}
	}
	logs := buf.String()
	if n := strings.Count(logs, "check failed"); n != 1 {
		t.Fatalf("%d failure lines for 50 failures in one interval, want 1:\n%s", n, logs)
	}
	if n := strings.Count(logs, "circuit breaker open"); n != 1 {
		t.Fatalf("%d breaker-open lines, want 1:\n%s", n, logs)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
