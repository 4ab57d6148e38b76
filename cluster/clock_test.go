package cluster

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// TestClockGapNeverLongerThanReal reads the default clock in pairs while
// busy goroutines starve the reader (one per CPU) and
// the reader sleeps or yields between reads: the gap between the two
// readings of a pair is never longer than the real time between the start
// of the first read and the end of the second. A cached clock fails this
// when its ticker is starved between the two reads (a stale value, then a
// fresh one).
func TestClockGapNeverLongerThanReal(t *testing.T) {
	c := newMonoClock()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := 0
			for !stop.Load() {
				x++
			}
			_ = x
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()
	prev := c.Now()
	for i := range 100 {
		before := time.Now()
		a := c.Now()
		switch i % 3 {
		case 0:
			runtime.Gosched()
		case 1:
			time.Sleep(time.Duration(i%7) * 100 * time.Microsecond)
		}
		b := c.Now()
		real := time.Since(before)
		// Truncation to the microsecond can round each reading down.
		if gap := b.Sub(a); gap > real+time.Microsecond {
			t.Fatalf("pair %d: two reads %v apart saw a gap of %v", i, real, gap)
		}
		if a.Before(prev) || b.Before(a) {
			t.Fatalf("pair %d: the clock went back: %v, then %v, then %v", i, prev, a, b)
		}
		prev = b
	}
	if d := time.Until(c.Now()); d > time.Second || d < -time.Second {
		t.Fatalf("clock is %v off the system clock", -d)
	}
}

// TestNodeClockBoundary: nginx's limit_req at 1r/s allows a request a
// whole second after the last one; so does a node with the default clock,
// and it denies one that comes sooner, however long the first call took.
func TestNodeClockBoundary(t *testing.T) {
	ctx := context.Background()
	n, err := Start(ctx, Config{Policies: []bucket.Policy{{Name: "g", Algorithm: bucket.GCRA, Limit: 1, Window: time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	for i := range 2 {
		d, err := n.Allow(ctx, "g", "k", 1)
		if err != nil || !d.Allowed {
			t.Fatalf("round %d: first check: %+v, %v", i, d, err)
		}
		done := time.Now()
		if d, _ := n.Allow(ctx, "g", "k", 1); d.Allowed {
			t.Fatalf("round %d: a second check %v after an allowed one was allowed", i, time.Since(done))
		}
		time.Sleep(time.Until(done.Add(time.Second)))
		if d, err := n.Allow(ctx, "g", "k", 1); err != nil || !d.Allowed {
			t.Fatalf("round %d: a check a whole second after an allowed one: %+v, %v", i, d, err)
		}
		time.Sleep(time.Second)
	}
}

// BenchmarkClockRead is one read of the default clock ("mono"), against a
// load of a cached time ("cached", the clock it replaced) and time.Now
// ("system"), in the same run.
func BenchmarkClockRead(b *testing.B) {
	mono := newMonoClock()
	var cached atomic.Int64
	cached.Store(time.Now().UnixMicro())
	var sink int64
	b.Run("mono", func(b *testing.B) {
		for range b.N {
			sink += mono.Now().UnixMicro()
		}
	})
	b.Run("cached", func(b *testing.B) {
		for range b.N {
			sink += time.UnixMicro(cached.Load()).UnixMicro()
		}
	})
	b.Run("system", func(b *testing.B) {
		for range b.N {
			sink += time.Now().UnixMicro()
		}
	})
	_ = sink
}
