package cluster

import (
	"strconv"
	"testing"
	"time"
)

// TestDeniedFloodIsSampled checks that past deniedExact denials in a
// minute a policy's denials are sampled, and that the flood's keys are
// still found with their counts within a few percent, while a minute of
// fewer denials is counted exactly.
func TestDeniedFloodIsSampled(t *testing.T) {
	d := newDeniedPolicy(64)
	now := time.Unix(1_700_000_000, 0).Truncate(time.Minute)
	const n = 4 * deniedExact
	truth := map[string]int{}
	for i := range n {
		var key string
		switch {
		case i%2 == 0:
			key = "ip:hot" // 50%
		case i%5 == 1:
			key = "ip:warm" // 20%
		default:
			key = "ip:" + strconv.Itoa(i%5000) // a spread tail
		}
		truth[key]++
		d.add(key, now)
	}
	if every := d.every.Load(); every < 2 {
		t.Fatalf("after %d denials in a minute, every = %d: not sampling", n, every)
	}
	sum := d.summary(now, 1)
	if got := float64(sum.Total); got < 0.9*n || got > 1.1*n {
		t.Errorf("estimated total %v, true %d", got, n)
	}
	for _, k := range []string{"ip:hot", "ip:warm"} {
		var got uint64
		for _, e := range sum.Entries {
			if e.Key == k {
				got = e.Count
			}
		}
		if want := float64(truth[k]); float64(got) < 0.95*want || float64(got) > 1.05*want+float64(sum.Floor) {
			t.Errorf("%s: estimated %d, true %v", k, got, want)
		}
	}
	// The next minute is exact again.
	next := now.Add(time.Minute)
	for range 100 {
		d.add("ip:quiet", next)
	}
	if sum := d.summary(next, 1); len(sum.Entries) != 1 || sum.Entries[0].Count != 100 || sum.Entries[0].Error != 0 {
		t.Fatalf("the next minute: %+v, want ip:quiet counted 100 times exactly", sum.Entries)
	}
}
