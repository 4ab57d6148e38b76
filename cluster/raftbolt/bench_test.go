package raftbolt

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// BenchmarkStoreLogs stores batches of 1 and 64 entries of 128 bytes, with
// fsync (production) and without (Options.NoSync), against raft's in-memory
// store as the baseline. ns/entry is the time per stored entry.
//
//	go test -run '^$' -bench StoreLogs -benchmem ./cluster/raftbolt/
func BenchmarkStoreLogs(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) raft.LogStore
	}{
		{name: "inmem", open: func(*testing.B) raft.LogStore { return raft.NewInmemStore() }},
		{name: "bolt-nosync", open: func(b *testing.B) raft.LogStore { return openTemp(b, Options{NoSync: true}) }},
		{name: "bolt-fsync", open: func(b *testing.B) raft.LogStore { return openTemp(b, Options{}) }},
	}
	data := make([]byte, 128)
	for _, batch := range []int{1, 64} {
		for _, st := range stores {
			b.Run(fmt.Sprintf("batch=%d/%s", batch, st.name), func(b *testing.B) {
				s := st.open(b)
				logs := make([]*raft.Log, batch)
				for i := range logs {
					logs[i] = &raft.Log{Type: raft.LogCommand, Term: 1, Data: data, AppendedAt: time.Now()}
				}
				next := uint64(1)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					for _, l := range logs {
						l.Index = next
						next++
					}
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/entry")
			})
		}
	}
}

// BenchmarkGetLog reads entries of 128 bytes from a store of 10,000.
func BenchmarkGetLog(b *testing.B) {
	s := openTemp(b, Options{NoSync: true})
	const n = 10_000
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Data: make([]byte, 128), AppendedAt: time.Now()}
	}
	if err := s.StoreLogs(logs); err != nil {
		b.Fatal(err)
	}
	var l raft.Log
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.GetLog(uint64(i%n+1), &l); err != nil {
			b.Fatal(err)
		}
	}
}
