package topk

import (
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// zipfStream returns n keys drawn from a Zipf distribution over distinct
// keys, and their true counts.
func zipfStream(seed int64, n int, distinct uint64, s float64) ([]string, map[string]uint64) {
	rng := rand.New(rand.NewSource(seed))
	z := rand.NewZipf(rng, s, 1, distinct-1)
	keys := make([]string, n)
	truth := map[string]uint64{}
	for i := range keys {
		v := z.Uint64()
		keys[i] = fmt.Sprintf("user:%d", v)
		truth[keys[i]]++
	}
	return keys, truth
}

func trueTop(truth map[string]uint64, k int) []string {
	keys := make([]string, 0, len(truth))
	for key := range truth {
		keys = append(keys, key)
	}
	sort.Slice(keys, func(i, j int) bool {
		if truth[keys[i]] != truth[keys[j]] {
			return truth[keys[i]] > truth[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys[:k]
}

// checkBounds asserts the space-saving guarantee on every entry: the true
// count lies in [Count-Error, Count], and Error is at most bound.
func checkBounds(t *testing.T, sum Summary, truth map[string]uint64, bound uint64) {
	t.Helper()
	for _, e := range sum.Entries {
		c := truth[e.Key]
		if e.Count < c || e.Count-e.Error > c {
			t.Errorf("%s: count %d error %d, true count %d outside [count-error, count]", e.Key, e.Count, e.Error, c)
		}
		if e.Error > bound {
			t.Errorf("%s: error %d above the stated bound N/m = %d", e.Key, e.Error, bound)
		}
	}
}

func TestSketchFindsZipfTop10(t *testing.T) {
	const n, slots = 100_000, 64
	for _, s := range []float64{1.1, 1.5} {
		t.Run(fmt.Sprint("s=", s), func(t *testing.T) {
			keys, truth := zipfStream(int64(s*10), n, 100_000, s)
			sk := NewSketch(Config{Slots: slots})
			for _, k := range keys {
				sk.Add(k, 1)
			}
			sum := sk.Summary()
			if sum.Total != n {
				t.Fatalf("Total %d, want %d", sum.Total, n)
			}
			checkBounds(t, sum, truth, n/slots)
			got := make([]string, 0, 10)
			for _, e := range sum.Entries[:10] {
				got = append(got, e.Key)
			}
			want := trueTop(truth, 10)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("top 10 of the sketch %v, true top 10 %v", got, want)
			}
			// Any key missing from the summary has a true count under Floor.
			listed := map[string]bool{}
			for _, e := range sum.Entries {
				listed[e.Key] = true
			}
			for k, c := range truth {
				if !listed[k] && c > sum.Floor {
					t.Errorf("%s: true count %d above Floor %d, yet not listed", k, c, sum.Floor)
				}
			}
		})
	}
}

func TestMergeKeepsBounds(t *testing.T) {
	// Three "nodes" each see a third of one Zipf stream; the merge of their
	// summaries still brackets every true count and finds the top 10.
	const n, slots = 90_000, 64
	keys, truth := zipfStream(7, n, 50_000, 1.3)
	var sums []Summary
	for part := range 3 {
		sk := NewSketch(Config{Slots: slots})
		for i := part; i < len(keys); i += 3 {
			sk.Add(keys[i], 1)
		}
		sums = append(sums, sk.Summary())
	}
	m := Merge(slots, sums...)
	checkBounds(t, m, truth, n/slots)
	if m.Total != n {
		t.Fatalf("Total %d, want %d", m.Total, n)
	}
	want := trueTop(truth, 10)
	for _, k := range want {
		if !slices.ContainsFunc(m.Entries[:10], func(e Entry) bool { return e.Key == k }) {
			t.Errorf("true top key %s (count %d) not in the merged top 10 %v", k, truth[k], m.Entries[:10])
		}
	}
}

func TestSketchAddDoesNotAllocate(t *testing.T) {
	sk := NewSketch(Config{Slots: 16, MaxKeyLen: 8})
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d-with-a-long-tail", i)
	}
	i := 0
	allocs := testing.AllocsPerRun(10_000, func() {
		sk.Add(keys[i%len(keys)], 1)
		i++
	})
	if allocs != 0 {
		t.Fatalf("Add allocates %.1f times per call, want 0", allocs)
	}
	r := NewRecent(Config{Slots: 16}, time.Minute, 3)
	now := time.Unix(1_700_000_000, 0)
	allocs = testing.AllocsPerRun(10_000, func() {
		now = now.Add(time.Second) // crosses epochs too
		r.Add(keys[i%len(keys)], 1, now)
		i++
	})
	if allocs != 0 {
		t.Fatalf("Recent.Add allocates %.1f times per call, want 0", allocs)
	}
}

func TestSketchMemoryBound(t *testing.T) {
	cfg := Config{Slots: 64, MaxKeyLen: 64}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := NewRecent(cfg, time.Minute, 16)
	now := time.Unix(1_700_000_000, 0)
	key := make([]byte, 200)
	for i := range 100_000 { // many distinct keys, longer than a slot
		copy(key, fmt.Appendf(key[:0], "ip:%d:", i))
		r.Add(string(key), 1, now.Add(time.Duration(i)*time.Millisecond))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	bound := int64(RecentBytes(cfg, 16)) + 16*1024 // arrays plus headers and slack
	if grew > bound {
		t.Fatalf("heap grew %d bytes for a Recent of %d documented bytes", grew, RecentBytes(cfg, 16))
	}
	runtime.KeepAlive(r)
	sum := r.Summary(now.Add(time.Hour), 16, 0)
	for _, e := range sum.Entries {
		if len(e.Key) > cfg.MaxKeyLen || !e.Truncated {
			t.Fatalf("entry %q (truncated %v): want keys cut to %d bytes and marked", e.Key, e.Truncated, cfg.MaxKeyLen)
		}
	}
}

func TestRecentWindows(t *testing.T) {
	r := NewRecent(Config{}, time.Minute, 15)
	t0 := time.Unix(1_700_000_000, 0).Truncate(time.Minute)
	// Minute 0: "old" 5 times; minute 10: "mid" 3 times; minute 14: "new" twice.
	for range 5 {
		r.Add("old", 1, t0.Add(10*time.Second))
	}
	for range 3 {
		r.Add("mid", 1, t0.Add(10*time.Minute))
	}
	r.Add("new", 2, t0.Add(14*time.Minute+time.Second))
	now := t0.Add(14*time.Minute + 30*time.Second)
	keysOf := func(s Summary) string {
		var ks []string
		for _, e := range s.Entries {
			ks = append(ks, fmt.Sprintf("%s=%d", e.Key, e.Count))
		}
		return strings.Join(ks, ",")
	}
	for _, tc := range []struct {
		epochs int
		want   string
	}{
		{1, "new=2"},
		{5, "mid=3,new=2"},
		{15, "old=5,mid=3,new=2"},
		{99, "old=5,mid=3,new=2"}, // capped at the ring
	} {
		if got := keysOf(r.Summary(now, tc.epochs, 10)); got != tc.want {
			t.Errorf("last %d epochs: %s, want %s", tc.epochs, got, tc.want)
		}
	}
	// A minute later, minute 0 has left the window and its slot is reused.
	later := t0.Add(15*time.Minute + time.Second)
	r.Add("newest", 1, later)
	if got := keysOf(r.Summary(later, 15, 10)); got != "mid=3,new=2,newest=1" {
		t.Errorf("after the ring turned: %s", got)
	}
}

func TestUnionOfStripes(t *testing.T) {
	// One stream split by key over 4 sketches of 16 slots: the union
	// brackets every true count with no Floor added, and finds the top 10.
	const n = 90_000
	keys, truth := zipfStream(11, n, 50_000, 1.3)
	var stripes [4]*Sketch
	for i := range stripes {
		stripes[i] = NewSketch(Config{Slots: 16})
	}
	for _, k := range keys {
		stripes[int(k[len(k)-1])%4].Add(k, 1) // by the last digit: any split by key will do
	}
	var sums []Summary
	for _, s := range stripes {
		sums = append(sums, s.Summary())
	}
	u := Union(0, sums...)
	if u.Total != n || len(u.Entries) != 64 {
		t.Fatalf("union: total %d, %d entries", u.Total, len(u.Entries))
	}
	var worst uint64
	for _, s := range stripes {
		worst = max(worst, s.Total()/16)
	}
	checkBounds(t, u, truth, worst)
	for _, k := range trueTop(truth, 10) {
		if !slices.ContainsFunc(u.Entries[:10], func(e Entry) bool { return e.Key == k }) {
			t.Errorf("true top key %s (count %d) not in the union's top 10", k, truth[k])
		}
	}
}
