package cluster_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
)

// benchPolicies never deny during a benchmark, so the figures are of the
// full decide-and-consume path.
var benchPolicies = []bucket.Policy{{Name: "p", Limit: 1 << 31, Window: time.Hour}}

// BenchmarkAllowLocal is one check of a local key; run with -cpu 1,2 for
// one and two goroutines.
// Each goroutine checks its own key. "monoclock" is the default clock (a
// monotonic read per check); "cachedclock" is the baseline it replaced (an
// atomic load of a time a ticker stores every millisecond), and
// "systemclock" time.Now.
func BenchmarkAllowLocal(b *testing.B) {
	cached := newCachedClock(time.Millisecond)
	defer cached.stop()
	for _, c := range []struct {
		name  string
		clock bucket.Clock
	}{{"monoclock", nil}, {"cachedclock", cached}, {"systemclock", bucket.SystemClock{}}} {
		b.Run(c.name, func(b *testing.B) {
			n, _ := cluster.Start(context.Background(), cluster.Config{Policies: benchPolicies, Clock: c.clock})
			defer n.Close(context.Background())
			ctx := context.Background()
			var seq atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				key := "ip:10.1.2." + strconv.FormatInt(seq.Add(1), 10)
				for pb.Next() {
					if _, err := n.Allow(ctx, "p", key, 1); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// cachedClock is the clock the nodes used before: a ticker stores the
// time in an atomic, and a check loads it. Kept here as the benchmark's
// baseline; it can over-admit (see cluster.Config.Clock).
type cachedClock struct {
	now  atomic.Int64
	done chan struct{}
}

func newCachedClock(tick time.Duration) *cachedClock {
	c := &cachedClock{done: make(chan struct{})}
	c.now.Store(time.Now().UnixMicro())
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-c.done:
				return
			case now := <-t.C:
				c.now.Store(now.UnixMicro())
			}
		}
	}()
	return c
}

func (c *cachedClock) Now() time.Time { return time.UnixMicro(c.now.Load()) }
func (c *cachedClock) stop()          { close(c.done) }

// BenchmarkAllowHotKey has every goroutine check one key: the worst case
// for the store's per-shard lock.
func BenchmarkAllowHotKey(b *testing.B) {
	n, _ := cluster.Start(context.Background(), cluster.Config{Policies: benchPolicies})
	defer n.Close(context.Background())
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := n.Allow(ctx, "p", "ip:10.1.2.3", 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAllowManyKeys checks over 1M distinct keys, so the working set
// misses the CPU caches as a real key space does.
func BenchmarkAllowManyKeys(b *testing.B) {
	const keys = 1 << 20
	ids := make([]string, keys)
	for i := range ids {
		ids[i] = "ip:10." + strconv.Itoa(i>>16) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255)
	}
	n, _ := cluster.Start(context.Background(), cluster.Config{Policies: benchPolicies})
	defer n.Close(context.Background())
	ctx := context.Background()
	for _, id := range ids {
		n.Allow(ctx, "p", id, 1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := uint32(time.Now().UnixNano())
		for pb.Next() {
			i = i*1664525 + 1013904223
			if _, err := n.Allow(ctx, "p", ids[i%keys], 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMemoryPerKey reports the heap bytes each stored counter costs
// beyond its key string: 1M counters in a memory store, measured after GC.
func BenchmarkMemoryPerKey(b *testing.B) {
	const keys = 1 << 20
	p := benchPolicies[0]
	for range b.N {
		ids := make([]string, keys)
		for i := range ids {
			ids[i] = "ip:" + strconv.Itoa(1_000_000+i)
		}
		var keyBytes int
		for _, id := range ids {
			keyBytes += len(p.Name) + 1 + len(id) // the stored key: policy length, policy, id
		}
		before := heap()
		s := bucket.NewMemoryStore(bucket.MemoryConfig{})
		now := time.Now()
		for _, id := range ids {
			s.Take(context.Background(), bucket.Key{Policy: p.Name, ID: id}, p, 1, now)
		}
		after := heap()
		runtime.KeepAlive(s)
		b.ReportMetric(float64(int(after-before)-keyBytes)/keys, "bytes/key")
		b.ReportMetric(float64(keyBytes)/keys, "keybytes/key")
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
