package cluster

import (
	"strconv"
	"testing"
	"time"
)

// TestDeniedFloodIsSampled checks that past deniedExact denials in a
// second a policy's denials are sampled, and that over 16 seconds of
// flood its keys are still found with their counts within a few percent
// (the sampling's standard deviation is about 1% here for the 20% key,
// 0.6% for the 50% one), while a second of fewer denials is counted
// exactly.
func TestDeniedFloodIsSampled(t *testing.T) {
	d := newDeniedPolicy(64)
	start := time.Unix(1_700_000_000, 0).Truncate(time.Minute)
	const seconds, perSecond = 16, 16 * deniedExact
	truth := map[string]int{}
	var now time.Time
	for s := range seconds {
		now = start.Add(time.Duration(s) * time.Second)
		for i := range perSecond {
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
			d.add(key, now.Add(time.Duration(i)*(time.Second/perSecond)))
		}
		if every := d.every.Load(); every < 8 {
			t.Fatalf("after %d denials in a second, every = %d: not sampling", perSecond, every)
		}
	}
	const n = seconds * perSecond
	sum := d.summary(now, 1)
	if got := float64(sum.Total); got < 0.98*n || got > 1.02*n {
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
	// The next second is exact again: each of its denials counts 1.
	next := now.Add(time.Second)
	for range 100 {
		d.add("ip:quiet", next)
	}
	if every := d.every.Load(); every != 1 {
		t.Fatalf("100 denials in a new second: every = %d, want 1", every)
	}
	found := false
	for _, e := range d.summary(next, 1).Entries {
		if e.Key == "ip:quiet" {
			found = true
			if e.Count-e.Error != 100 {
				t.Fatalf("ip:quiet counted %d (error %d) since it entered, want 100 exactly", e.Count, e.Error)
			}
		}
	}
	if !found {
		t.Fatal("ip:quiet, the last key counted, is not in the summary")
	}
	// A quiet minute is exact whole.
	later := next.Add(time.Minute)
	for range 100 {
		d.add("ip:calm", later)
	}
	if sum := d.summary(later, 1); len(sum.Entries) != 1 || sum.Entries[0].Count != 100 || sum.Entries[0].Error != 0 {
		t.Fatalf("a quiet minute: %+v, want ip:calm counted 100 times exactly", sum.Entries)
	}
}
