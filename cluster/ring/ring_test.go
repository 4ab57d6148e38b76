package ring_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/vibewell/ratelimit/cluster/ring"
)

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "node-" + strconv.Itoa(i)
	}
	return out
}

func keys(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte("\x04authip:10.0." + strconv.Itoa(i))
	}
	return out
}

func TestSameOwnersWhateverTheOrder(t *testing.T) {
	a := ring.New([]string{"a", "b", "c", "d"}, ring.Config{})
	b := ring.New([]string{"d", "b", "a", "c", "a"}, ring.Config{})
	for _, k := range keys(10000) {
		if a.Owner(k) != b.Owner(k) {
			t.Fatalf("key %q: owner %s vs %s", k, a.Owner(k), b.Owner(k))
		}
	}
}

// TestSpread: each member's share of keys is within ±12% of even (the
// ring is deterministic: 10.5% is the most measured, at 7 members).
func TestSpread(t *testing.T) {
	ks := keys(200_000)
	for _, n := range []int{2, 3, 5, 7, 16} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := ring.New(names(n), ring.Config{})
			count := map[string]int{}
			for _, k := range ks {
				count[r.Owner(k)]++
			}
			even := float64(len(ks)) / float64(n)
			for m, c := range count {
				if dev := float64(c)/even - 1; dev > 0.12 || dev < -0.12 {
					t.Errorf("member %s owns %d keys, %.1f%% off an even share", m, c, dev*100)
				}
			}
			if len(count) != n {
				t.Errorf("%d of %d members own keys", len(count), n)
			}
		})
	}
}

// TestMembershipChangeMovesFewKeys: adding a member moves about its share
// of keys, and keys only move to the new member; removing one moves only
// the keys it owned (groupcache TestConsistency). The ring is
// deterministic; the bounds are the measured figures (21.0% moved, 99.8%
// of them to the new member, 99.7% kept) with a small margin, so that a
// change of the hashing or the partition layout that moves more shows.
func TestMembershipChangeMovesFewKeys(t *testing.T) {
	ks := keys(100_000)
	before := ring.New(names(4), ring.Config{})
	after := ring.New(names(5), ring.Config{})
	moved, toNew := 0, 0
	for _, k := range ks {
		if before.Owner(k) != after.Owner(k) {
			moved++
			if after.Owner(k) == "node-4" {
				toNew++
			}
		}
	}
	if share := float64(moved) / float64(len(ks)); share > 0.23 {
		t.Errorf("adding a 5th member moved %.1f%% of keys, want at most 23%% (its share is 20%%)", share*100)
	}
	if float64(toNew) < 0.98*float64(moved) {
		t.Errorf("of %d moved keys only %d went to the new member", moved, toNew)
	}
	removed := ring.New([]string{"node-0", "node-1", "node-3"}, ring.Config{})
	stay := 0
	for _, k := range ks {
		if o := before.Owner(k); o != "node-2" && removed.Owner(k) == o {
			stay++
		}
	}
	owned2 := 0
	for _, k := range ks {
		if before.Owner(k) == "node-2" {
			owned2++
		}
	}
	if kept := float64(stay) / float64(len(ks)-owned2); kept < 0.99 {
		t.Errorf("removing a member kept only %.1f%% of the other members' keys in place", kept*100)
	}
}

func TestEmpty(t *testing.T) {
	var zero ring.Ring
	if zero.Owner([]byte("k")) != "" || ring.New(nil, ring.Config{}).Owner([]byte("k")) != "" {
		t.Fatal("an empty ring must own nothing")
	}
	r := ring.New([]string{"solo"}, ring.Config{})
	if r.Owner([]byte("k")) != "solo" || !r.Has("solo") || r.Has("x") || r.Len() != 1 {
		t.Fatal("a one-member ring owns everything")
	}
}

func BenchmarkOwner(b *testing.B) {
	r := ring.New(names(5), ring.Config{})
	k := []byte("\x04authip:10.1.2.3")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Owner(k)
		}
	})
}

func BenchmarkNew(b *testing.B) {
	for range b.N {
		ring.New(names(5), ring.Config{})
	}
}

// TestFingerprint: configs that spread keys the same (a zero field and its
// default) share a fingerprint; any other value changes it.
func TestFingerprint(t *testing.T) {
	zero := ring.Config{}.Fingerprint()
	if got := (ring.Config{PartitionCount: 4099, ReplicationFactor: 200, Load: 1.05}).Fingerprint(); got != zero {
		t.Errorf("the defaults spelt out: %x, the zero config %x", got, zero)
	}
	for _, c := range []ring.Config{{PartitionCount: 271}, {ReplicationFactor: 40}, {Load: 1.25}} {
		if c.Fingerprint() == zero {
			t.Errorf("%+v has the default config's fingerprint", c)
		}
	}
}
