package bucket

import (
	"context"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchStore is what the store benchmarks need of a store: the slot store
// or the map store of the baseline.
type benchStore interface {
	Take(ctx context.Context, k Key, p Policy, hits int64, now time.Time) (Decision, error)
}

var benchStores = []struct {
	name string
	new  func() benchStore
}{
	{"map", func() benchStore { return newMapStore(MemoryConfig{}) }},
	{"slots", func() benchStore { return NewMemoryStore(MemoryConfig{}) }},
}

// benchID is the 13-byte ID of key i: "ip:" and 10 digits.
func benchID(i int) string { return "ip:" + strconv.Itoa(1_000_000_000+i) }

// BenchmarkStoreMemory fills a store with 1M or 4M keys of 13 bytes (21
// encoded with the policy "default") and reports, per key, what the
// process's RSS and the Go heap grew by, measured after a GC that returns
// freed memory to the OS; then, while 500k checks run against the full store
// with a GC forced every 200k, the longest stop-the-world GC pause (the
// upper bound of its histogram bucket) and the GC's CPU time per cycle,
// which is mostly the marking of what the store holds. Run one sub-benchmark per process, so that one
// store's freed memory does not hide another's growth:
//
//	go test -run '^$' -bench 'StoreMemory/slots/1M' -benchtime 1x ./bucket/
func BenchmarkStoreMemory(b *testing.B) {
	p := Policy{Name: "default", Limit: 60, Window: time.Minute}
	for _, st := range benchStores {
		for _, keys := range []int{1 << 20, 4 << 20} {
			b.Run(st.name+"/"+strconv.Itoa(keys>>20)+"M", func(b *testing.B) {
				for range b.N {
					ctx := context.Background()
					rss0, heap0 := memNow()
					s := st.new()
					now := time.Now()
					for i := range keys {
						s.Take(ctx, Key{Policy: p.Name, ID: benchID(i)}, p, 1, now)
					}
					rss1, heap1 := memNow()
					b.ReportMetric(float64(rss1-rss0)/float64(keys), "rss-B/key")
					b.ReportMetric(float64(heap1-heap0)/float64(keys), "heap-B/key")
					// Checks against the full store, with a GC forced now and
					// then: the longest stop-the-world pause.
					pauses0, stops0 := gcPauses(), gcStopping()
					cpu0, cycles0 := gcWork()
					rng := rand.New(rand.NewPCG(1, 2))
					for j := range 500_000 {
						s.Take(ctx, Key{Policy: p.Name, ID: benchID(rng.IntN(keys))}, p, 1, now)
						if j%100_000 == 0 {
							runtime.GC()
						}
					}
					pauses1 := gcPauses()
					b.ReportMetric(maxPause(pauses0, pauses1).Seconds()*1000, "max-gc-pause-ms")
					b.ReportMetric(medianPause(pauses0, pauses1).Seconds()*1000, "median-gc-pause-ms")
					n, over := pausesOver(pauses0, pauses1, time.Millisecond)
					b.ReportMetric(float64(n), "gc-pauses")
					b.ReportMetric(float64(over), "gc-pauses>1ms")
					// Of a pause, the time it took to stop the threads: on a
					// loaded machine, waiting for the OS to run them.
					b.ReportMetric(maxPause(stops0, gcStopping()).Seconds()*1000, "max-gc-stopping-ms")
					cpu1, cycles1 := gcWork()
					b.ReportMetric((cpu1-cpu0)/float64(max(1, cycles1-cycles0))*1000, "gc-cpu-ms/cycle")
					runtime.KeepAlive(s)
				}
			})
		}
	}
}

// memNow returns the process's resident set and the Go heap in use, after
// a GC that returns what it freed to the OS.
func memNow() (rss, heap uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b, err := os.ReadFile("/proc/self/statm")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseUint(f[1], 10, 64)
			rss = pages * uint64(os.Getpagesize())
		}
	}
	return rss, m.HeapAlloc
}

// gcPauses reads the runtime's histogram of stop-the-world GC pauses.
func gcPauses() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: "/sched/pauses/total/gc:seconds"}}
	metrics.Read(s)
	return s[0].Value.Float64Histogram()
}

// gcStopping reads the runtime's histogram of the time the GC took to
// stop the world, a part of each pause.
func gcStopping() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: "/sched/pauses/stopping/gc:seconds"}}
	metrics.Read(s)
	return s[0].Value.Float64Histogram()
}

// medianPause returns the upper bound of the bucket of the median pause
// between two readings of the histogram.
func medianPause(before, after *metrics.Float64Histogram) time.Duration {
	var total uint64
	for i, n := range after.Counts {
		total += n - before.Counts[i]
	}
	var seen uint64
	for i, n := range after.Counts {
		if seen += n - before.Counts[i]; total > 0 && 2*seen >= total {
			return time.Duration(after.Buckets[i+1] * float64(time.Second))
		}
	}
	return 0
}

// pausesOver returns the pauses between two readings of the histogram, and
// how many of them lay in buckets that reach beyond d.
func pausesOver(before, after *metrics.Float64Histogram, d time.Duration) (n, over uint64) {
	for i, c := range after.Counts {
		c -= before.Counts[i]
		n += c
		if after.Buckets[i+1] > d.Seconds() {
			over += c
		}
	}
	return n, over
}

// gcWork returns the CPU seconds the GC has used and its cycles.
func gcWork() (cpu float64, cycles uint64) {
	s := []metrics.Sample{
		{Name: "/cpu/classes/gc/mark/assist:cpu-seconds"},
		{Name: "/cpu/classes/gc/mark/dedicated:cpu-seconds"},
		{Name: "/cpu/classes/gc/pause:cpu-seconds"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	metrics.Read(s)
	return s[0].Value.Float64() + s[1].Value.Float64() + s[2].Value.Float64(), s[3].Value.Uint64()
}

// maxPause returns the upper bound of the highest bucket that gained
// pauses between two readings of the histogram.
func maxPause(before, after *metrics.Float64Histogram) time.Duration {
	var longest float64
	for i, n := range after.Counts {
		if n > before.Counts[i] {
			longest = after.Buckets[i+1]
		}
	}
	return time.Duration(longest * float64(time.Second))
}

// BenchmarkStoreTake is the check time of the slot store against the map
// store, over 1M keys of 13 bytes checked at random, and on one hot key,
// from every CPU.
func BenchmarkStoreTake(b *testing.B) {
	p := Policy{Name: "default", Limit: 1 << 30, Window: time.Minute}
	const keys = 1 << 20
	ids := make([]string, keys)
	for i := range ids {
		ids[i] = benchID(i)
	}
	for _, st := range benchStores {
		s := st.new()
		now := time.Now()
		for _, id := range ids {
			s.Take(context.Background(), Key{Policy: p.Name, ID: id}, p, 1, now)
		}
		b.Run(st.name+"/1M", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
				for pb.Next() {
					s.Take(context.Background(), Key{Policy: p.Name, ID: ids[rng.IntN(keys)]}, p, 1, now)
				}
			})
		})
		b.Run(st.name+"/hot", func(b *testing.B) {
			k := Key{Policy: p.Name, ID: ids[0]}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					s.Take(context.Background(), k, p, 1, now)
				}
			})
		})
	}
}
