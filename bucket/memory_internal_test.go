package bucket

import (
	"context"
	"fmt"
	"hash/maphash"
	"maps"
	"strings"
	"testing"
	"time"
	"unsafe"

	"pgregory.net/rapid"
)

// A counter's slot is 96 bytes, and holds no pointer.
func TestCellLayout(t *testing.T) {
	if n := unsafe.Sizeof(cell{}); n != 96 {
		t.Fatalf("cell is %d bytes, want 96", n)
	}
}

// The slot store decides, ranges, sweeps, merges, deletes and lists changes
// exactly as the map store it replaced, for keys inline and in the arena,
// across index growth, slot reuse and arena compaction.
func TestPropertyMemoryStoreMatchesMapStore(t *testing.T) {
	ctx := context.Background()
	policies := []Policy{
		{Name: "p", Limit: 5, Window: time.Minute},
		{Name: "g", Algorithm: GCRA, Limit: 3, Window: time.Second, Burst: 2},
		{Name: "f", Algorithm: FixedWindow, Limit: 4, Window: 10 * time.Second},
		{Name: "b", Limit: 3000, Window: time.Minute}, // listed every 2 hits
	}
	rapid.Check(t, func(t *rapid.T) {
		shards := rapid.SampledFrom([]int{1, 4}).Draw(t, "shards")
		cfg := MemoryConfig{Shards: shards, MaxKeys: 1 << 20, TrackChanges: true}
		got, want := NewMemoryStore(cfg), newMapStore(cfg)
		keyCount := rapid.IntRange(1, 300).Draw(t, "keys")
		long := strings.Repeat("x", rapid.IntRange(0, 200).Draw(t, "long"))
		key := func(t *rapid.T) (Key, Policy) {
			i := rapid.IntRange(0, keyCount-1).Draw(t, "key")
			p := policies[i%len(policies)]
			id := fmt.Sprint("k", i)
			if i%3 == 0 {
				id += long
			}
			return Key{Policy: p.Name, ID: id}, p
		}
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for range rapid.IntRange(1, 400).Draw(t, "ops") {
			now = now.Add(time.Duration(rapid.IntRange(0, 3000).Draw(t, "ms")) * time.Millisecond)
			switch op := rapid.IntRange(0, 9).Draw(t, "op"); op {
			case 0:
				if a, b := got.Sweep(now), want.Sweep(now); a != b {
					t.Fatalf("Sweep dropped %d, want %d", a, b)
				}
			case 1:
				k, _ := key(t)
				got.Delete(k)
				want.Delete(k)
			case 2:
				k, p := key(t)
				var st State
				Take(p, &st, rapid.Int64Range(1, 3).Draw(t, "mhits"), now.Add(-time.Duration(rapid.IntRange(0, 5000).Draw(t, "ago"))*time.Millisecond))
				got.Merge(k, p, st, now)
				want.Merge(k, p, st, now)
			case 3:
				a, b := map[Key]State{}, map[Key]State{}
				got.Changed(func(k Key, st State) { a[k] = st })
				want.Changed(func(k Key, st State) {
					if want.has(k) { // the map store also lists counters deleted since
						b[k] = st
					}
				})
				if !maps.Equal(a, b) {
					t.Fatalf("Changed listed %d counters, want %d:\n%v\n%v", len(a), len(b), a, b)
				}
			default:
				k, p := key(t)
				hits := rapid.Int64Range(0, 3).Draw(t, "hits")
				a, _ := got.Take(ctx, k, p, hits, now)
				b, _ := want.Take(ctx, k, p, hits, now)
				if a != b {
					t.Fatalf("Take %v: %+v, want %+v", k, a, b)
				}
			}
			if got.Len() != want.Len() {
				t.Fatalf("Len %d, want %d", got.Len(), want.Len())
			}
		}
		a, b := map[Key]State{}, map[Key]State{}
		got.Range(now, func(k Key, st State) bool { a[k] = st; return true })
		want.Range(now, func(k Key, st State) bool { b[k] = st; return true })
		if !maps.Equal(a, b) {
			t.Fatalf("Range yields %d counters, want %d", len(a), len(b))
		}
	})
}

// Under a stream of keys far past its bound, of every length, the store
// holds at most its bound and finds every key it holds.
func TestMemoryStoreChurn(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore(MemoryConfig{Shards: 4, MaxKeys: 256})
	p := Policy{Name: "p", Limit: 100, Window: time.Hour}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 20_000 {
		id := fmt.Sprint(i, strings.Repeat("y", i%70))
		if d, _ := s.Take(ctx, Key{Policy: "p", ID: id}, p, 1, now); !d.Allowed {
			t.Fatalf("fresh key %d denied", i)
		}
		if i%1000 == 0 {
			s.Sweep(now.Add(2 * time.Hour)) // drops all: slots and arena bytes are freed
		}
	}
	if n := s.Len(); n > 256 {
		t.Fatalf("%d counters held, bound 256", n)
	}
	var held []Key
	s.Range(now, func(k Key, st State) bool {
		held = append(held, k)
		return true
	})
	if len(held) != s.Len() {
		t.Fatalf("Range yields %d counters, Len says %d", len(held), s.Len())
	}
	for _, k := range held {
		if d, _ := s.Take(ctx, k, p, 0, now); d.Remaining != 99 {
			t.Fatalf("%v: remaining %d after one hit, want 99", k, d.Remaining)
		}
	}
	for i := range s.shards {
		sh := &s.shards[i]
		if sh.dead > len(sh.arena) {
			t.Fatalf("shard %d: %d dead arena bytes of %d", i, sh.dead, len(sh.arena))
		}
	}
}

// has reports whether the map store holds a counter of k.
func (s *mapStore) has(k Key) bool {
	enc := k.appendTo(nil)
	sh := &s.shards[maphash.Bytes(s.seed, enc)&s.mask]
	_, ok := sh.m[string(enc)]
	return ok
}
