package topk

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkRecentAdd is one Add: "hit" of a key the sketch holds, "miss"
// of keys rotating over more than its slots (each Add evicts one).
func BenchmarkRecentAdd(b *testing.B) {
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "ip:10.1." + strconv.Itoa(i)
	}
	now := time.Unix(1_700_000_000, 0)
	for _, c := range []struct {
		name string
		keys int
	}{{"hit", 16}, {"miss", 1000}} {
		b.Run(c.name, func(b *testing.B) {
			r := NewRecent(Config{}, time.Minute, 16)
			for i := 0; b.Loop(); i++ {
				r.Add(keys[i%c.keys], 1, now)
			}
		})
	}
}
