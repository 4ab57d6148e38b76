package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// faultPolicies are the two policies of the fault tests: one limit of
// 1000 an hour copied to the successor after the answer, one copied
// before it.
const faultPolicies = `policies:
  - name: async
    limit: 1000
    window_ms: 3600000
  - name: sync
    limit: 1000
    window_ms: 3600000
    replication: sync
`

// TestOwnerKilledMidRun: 5000 checks of one key of each policy (limit
// 1000) go to the two nodes that do not own them, from 8 senders, and
// their owner is SIGKILLed after 10% or 50% of them, with the local and
// the LAN gossip timings. The successor decides from its copy of the
// counter, at once (the owner's connection is refused), and owns the key
// once the ring drops the owner. Asserted: no check fails; "sync" admits
// at most its limit; "async" at most the limit and 1% (the hits of the
// last round of copies). Reported: allowed of each, and the longest check.
func TestOwnerKilledMidRun(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policies.yaml")
	if err := os.WriteFile(file, []byte(faultPolicies), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		profile string
		at      float64
	}{{"local", 0.1}, {"local", 0.5}, {"lan", 0.1}, {"lan", 0.5}} {
		t.Run(fmt.Sprintf("%s/%d%%", tc.profile, int(tc.at*100)), func(t *testing.T) {
			nodes := startCluster(t, 3, nil, func(int) []string {
				return []string{"--policies", file, "--gossip-profile", tc.profile}
			})

			keys := map[string]string{}
			for _, p := range []string{"async", "sync"} {
				for i := 0; keys[p] == ""; i++ {
					if k := p + "-" + strconv.Itoa(i); owner(p, k, "n1", "n2", "n3") == "n3" {
						keys[p] = k
					}
				}
			}
			const total, limit = 5000, 1000
			var (
				sent    [2]atomic.Int64
				allowed [2]atomic.Int64
				failed  atomic.Int64
				longest atomic.Int64
				first   atomic.Value
				wg      sync.WaitGroup
			)
			killAt := int64(tc.at * total)
			var killOnce sync.Once
			for w := range 8 {
				wg.Go(func() {
					url := nodes[w%2].URL
					for {
						pi := w % 2 // half the senders per policy
						i := sent[pi].Add(1)
						if i > total {
							return
						}
						if pi == 0 && i >= killAt {
							killOnce.Do(func() { nodes[2].signal(syscall.SIGKILL) })
						}
						p := []string{"async", "sync"}[pi]
						start := time.Now()
						r := check(url, p, keys[p], 1)
						if d := time.Since(start).Nanoseconds(); d > longest.Load() {
							longest.Store(d)
						}
						switch {
						case r.Err != nil || r.Status >= 500:
							failed.Add(1)
							first.CompareAndSwap(nil, fmt.Sprintf("%s: status %d, err %v", p, r.Status, r.Err))
						case r.Allowed:
							allowed[pi].Add(1)
						}
					}
				})
			}
			wg.Wait()
			a, s := allowed[0].Load(), allowed[1].Load()
			t.Logf("%s profile, owner killed after %d%% of %d checks per key: allowed %d (async) and %d (sync) of limit %d; %d failed; longest check %v",
				tc.profile, int(tc.at*100), total, a, s, limit, failed.Load(), time.Duration(longest.Load()).Round(time.Millisecond))
			if f := failed.Load(); f > 0 {
				t.Errorf("%d checks failed; first: %v", f, first.Load())
			}
			if s > limit {
				t.Errorf("sync replication: %d allowed, above the limit %d", s, limit)
			}
			if a > limit+limit/100 {
				t.Errorf("async replication: %d allowed, above the limit and 1%% (%d)", a, limit+limit/100)
			}
		})
	}
}
