package redisstore

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/vibewell/ratelimit/bucket"
)

// benchKeys are the keys the benchmarks spread their checks over: enough
// that most checks pass, as in production.
var benchKeys = func() []bucket.Key {
	keys := make([]bucket.Key, 10_000)
	for i := range keys {
		keys[i] = bucket.Key{Policy: "default", ID: "ip:10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)}
	}
	return keys
}()

// runCallers runs fn b.N times from callers goroutines (1 runs it
// sequentially) and reports checks per second.
func runCallers(b *testing.B, callers int, fn func(i int) error) {
	b.ReportAllocs()
	b.ResetTimer()
	if callers == 1 {
		for i := range b.N {
			if err := fn(i); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((callers + procs - 1) / procs)
		var seq atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := fn(int(seq.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
}

// BenchmarkChecks compares, at 1, 16 and 64 concurrent callers, a check of
// the Redis store (sliding window, server time: the production default),
// the same store with autopipelining off, the same check in the memory
// store, and the floor of any Redis limiter: a plain fixed window of
// pipelined INCR and PEXPIRE on the same Redis. The machine is shared and
// its load drifts, so every iteration runs a slice of each variant in turn
// (interleaved, the order rotating), and the rates and the ratio to the
// floor come from the summed slices.
//
//	go test -run '^$' -bench BenchmarkChecks ./bucket/redisstore
func BenchmarkChecks(b *testing.B) {
	url := testURL(b)
	ctx := context.Background()
	p := bucket.Policy{Name: "default", Limit: 1000, Window: time.Minute}
	store := newTestStore(b, url, func(o *Options) { o.UseCallerTime = false })
	plain := newTestStore(b, url, func(o *Options) { o.UseCallerTime = false; o.DisableAutoPipeline = true })
	mem := bucket.NewMemoryStore(bucket.MemoryConfig{})
	rc := redis.NewClient(&redis.Options{
		Addr: strings.TrimSuffix(strings.TrimPrefix(url, "redis://"), "/0"), PoolSize: store.opts.PoolSize,
		DisableIdentity: true, MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	b.Cleanup(func() { rc.Close() })
	floorKeys := make([]string, len(benchKeys))
	for i, k := range benchKeys {
		floorKeys[i] = store.opts.Prefix + "floor:" + k.ID
	}
	memNow := time.Now()
	variants := []struct {
		name string
		fn   func(i int) error
	}{
		{"redis", func(i int) error {
			_, err := store.Take(ctx, benchKeys[i%len(benchKeys)], p, 1, time.Time{})
			return err
		}},
		{"floor", func(i int) error {
			pipe := rc.Pipeline()
			key := floorKeys[i%len(floorKeys)]
			incr := pipe.Incr(ctx, key)
			pipe.PExpire(ctx, key, p.Window)
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			_ = incr.Val() <= p.Limit
			return nil
		}},
		{"redis-noautopipeline", func(i int) error {
			_, err := plain.Take(ctx, benchKeys[i%len(benchKeys)], p, 1, time.Time{})
			return err
		}},
		{"memory", func(i int) error {
			_, err := mem.Take(ctx, benchKeys[i%len(benchKeys)], p, 1, memNow)
			return err
		}},
	}
	const slice = 1000 // checks per variant per iteration
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			elapsed := make([]time.Duration, len(variants))
			for r := range b.N {
				for j := range variants {
					v := (r + j) % len(variants)
					start := time.Now()
					if err := runN(callers, slice, r*slice, variants[v].fn); err != nil {
						b.Fatal(err)
					}
					elapsed[v] += time.Since(start)
				}
			}
			rate := func(v int) float64 { return float64(b.N*slice) / elapsed[v].Seconds() }
			for v := range variants {
				b.ReportMetric(rate(v), variants[v].name+"-checks/s")
			}
			b.ReportMetric(rate(0)/rate(1), "redis/floor")
			b.ReportMetric(rate(2)/rate(1), "noautopipeline/floor")
		})
	}
}

// runN makes n calls of fn from callers goroutines (1: sequentially),
// numbering them from first.
func runN(callers, n, first int, fn func(i int) error) error {
	if callers == 1 {
		for i := range n {
			if err := fn(first + i); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, callers)
	)
	for range callers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(first + i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// BenchmarkBatch compares a batch of 100 checks sent as one pipeline with
// the same checks sent one by one, from one caller.
//
//	go test -run '^$' -bench BenchmarkBatch ./bucket/redisstore
func BenchmarkBatch(b *testing.B) {
	store := newTestStore(b, testURL(b), func(o *Options) { o.UseCallerTime = false })
	ctx := context.Background()
	p := bucket.Policy{Name: "default", Limit: 1000, Window: time.Minute}
	const size = 100
	checks := make([]bucket.Check, size)
	out := make([]bucket.Decision, size)
	b.Run("batch=100", func(b *testing.B) {
		runCallers(b, 1, func(i int) error {
			if i%size != 0 {
				return nil
			}
			for j := range checks {
				checks[j] = bucket.Check{Key: benchKeys[(i+j)%len(benchKeys)], Policy: p, Hits: 1}
			}
			return store.TakeBatch(ctx, checks, time.Time{}, out)
		})
	})
	b.Run("one-by-one", func(b *testing.B) {
		runCallers(b, 1, func(i int) error {
			_, err := store.Take(ctx, benchKeys[i%len(benchKeys)], p, 1, time.Time{})
			return err
		})
	})
}
