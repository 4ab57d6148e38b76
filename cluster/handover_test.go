package cluster_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/internal/testcluster"
)

// TestClusterRollingRestartExact restarts each of three in-process nodes
// in turn (a graceful leave, then a start under the same name and
// addresses) while 8 callers check 300 keys of limit 50 through the live
// nodes as fast as they can; afterwards every key is checked to
// exhaustion. Each key's ownership moves twice per restart of its owner
// (away, and back), with checks of it arriving at every node meanwhile.
// Asserted: every key admitted exactly its limit, no check failed.
func TestClusterRollingRestartExact(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly})
	const keys, limit, callers = 300, 50, 8
	var (
		allowed  [keys]atomic.Int64
		failed   atomic.Int64
		firstErr atomic.Value
		longest  atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for w := range callers {
		wg.Go(func() {
			for i := 0; i < 1_000_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				live := c.Live()
				n := c.Node(live[(w+i)%len(live)])
				if n == nil {
					continue
				}
				k := (w*37 + i*7) % keys
				start := time.Now()
				d, err := n.Allow(context.Background(), "small", "k"+strconv.Itoa(k), 1)
				if took := time.Since(start).Nanoseconds(); took > longest.Load() {
					longest.Store(took)
				}
				switch {
				case err != nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				case d.Allowed:
					allowed[k].Add(1)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	for i := range 3 {
		c.Leave(i)
		c.WaitConverged()
		time.Sleep(100 * time.Millisecond)
		c.Restart(i)
		c.WaitConverged()
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	exhaustKeys(t, c, limit, allowed[:])
	var over, under int64
	for k := range keys {
		a := allowed[k].Load()
		if a != limit {
			t.Errorf("key k%d: allowed %d, want exactly %d", k, a, limit)
		}
		over += max(0, a-limit)
		under += max(0, limit-a)
	}
	t.Logf("rolling restart of 3 in-process nodes under load: %d keys of limit %d, over-admitted %d, under-admitted %d; longest check %v",
		keys, limit, over, under, time.Duration(longest.Load()).Round(time.Millisecond))
	if f := failed.Load(); f > 0 {
		t.Errorf("%d checks failed on a ready node; first: %v", f, firstErr.Load())
	}
}
