package transport

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Commands (see docs/benchmarks-transport.md):
//
//	go test -run '^$' -bench 'Codec' -benchmem ./transport
//	go test -run '^$' -bench 'Check' -benchmem -benchtime 2s ./transport

func benchItems(n int) []CheckItem {
	items := make([]CheckItem, n)
	for i := range items {
		items[i] = CheckItem{Policy: "auth", Key: "ip:10.0.0." + strconv.Itoa(i), Hits: 1}
	}
	return items
}

// BenchmarkCodec encodes and decodes a batch of 100 checks (and of 100
// results): by hand, and by msgpack reflection with a reused encoder and
// decoder (its best case), as the baseline.
func BenchmarkCodec(b *testing.B) {
	items := benchItems(100)
	results := make([]CheckResult, 100)
	for i := range results {
		results[i] = CheckResult{Allowed: true, Limit: 10, Remaining: int64(i % 10), ResetAfter: 900 * time.Second}
	}
	wi := make([]wireItem, len(items))
	for i, it := range items {
		wi[i] = wireItem{Policy: it.Policy, Key: it.Key, Hits: it.Hits}
	}
	wr := make([]wireResult, len(results))
	for i, r := range results {
		wr[i] = wireResult{Allowed: r.Allowed, Limit: r.Limit, Remaining: r.Remaining, ResetAfter: int64(r.ResetAfter)}
	}

	b.Run("items/hand/encode", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = appendCheckBatch(buf[:0], items)
		}
	})
	b.Run("items/hand/decode", func(b *testing.B) {
		enc := appendCheckBatch(nil, items)
		in := make(interner)
		var out []CheckItem
		for b.Loop() {
			out, _ = decodeCheckBatch(enc, out, in)
		}
	})
	b.Run("items/reflect/encode", func(b *testing.B) {
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		for b.Loop() {
			buf.Reset()
			if err := enc.Encode(wi); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("items/reflect/decode", func(b *testing.B) {
		data, _ := msgpack.Marshal(wi)
		r := bytes.NewReader(data)
		dec := msgpack.NewDecoder(r)
		var out []wireItem
		for b.Loop() {
			r.Reset(data)
			dec.Reset(r)
			out = out[:0]
			if err := dec.Decode(&out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("results/hand/encode", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = appendResultBatch(buf[:0], results)
		}
	})
	b.Run("results/hand/decode", func(b *testing.B) {
		enc := appendResultBatch(nil, results)
		var out []CheckResult
		for b.Loop() {
			out, _ = decodeResultBatch(enc, out)
		}
	})
	b.Run("results/reflect/encode", func(b *testing.B) {
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		for b.Loop() {
			buf.Reset()
			if err := enc.Encode(wr); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("results/reflect/decode", func(b *testing.B) {
		data, _ := msgpack.Marshal(wr)
		r := bytes.NewReader(data)
		dec := msgpack.NewDecoder(r)
		var out []wireResult
		for b.Loop() {
			r.Reset(data)
			dec.Reset(r)
			out = out[:0]
			if err := dec.Decode(&out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchPair starts a server and a client on loopback.
func benchPair(b *testing.B, cfg TCPConfig) (*TCP, string) {
	srv := newTCP(b, TCPConfig{}, &echoHandler{})
	cli := newClient(b, cfg)
	if _, err := cli.Check(context.Background(), srv.Addr(), CheckItem{Key: "warm"}); err != nil {
		b.Fatal(err)
	}
	return cli, srv.Addr()
}

// BenchmarkCheckSequential is one caller's Check round trip on loopback;
// it reports the p50 and p99 of a sample of the calls.
func BenchmarkCheckSequential(b *testing.B) {
	cli, addr := benchPair(b, TCPConfig{})
	ctx := context.Background()
	it := CheckItem{Policy: "auth", Key: "ip:10.0.0.1", Hits: 1}
	lat := make([]time.Duration, 0, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := cli.Check(ctx, addr, it); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(start))
		}
	}
	b.StopTimer()
	reportLatency(b, lat)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkCheckParallel runs Checks from many goroutines at once
// (RunParallel with parallelism p: p x GOMAXPROCS callers) and reports
// decisions/s and the mean batch size.
func BenchmarkCheckParallel(b *testing.B) {
	for _, p := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("p=%d", p), func(b *testing.B) {
			benchParallel(b, TCPConfig{}, p)
		})
	}
}

// BenchmarkCheckConfig compares batching settings at 2, 32 and 128
// callers.
func BenchmarkCheckConfig(b *testing.B) {
	for _, p := range []int{1, 16, 64} {
		for _, inflight := range []int{1, 2, 4} {
			for _, conns := range []int{1, 2} {
				b.Run(fmt.Sprintf("p=%d/inflight=%d/conns=%d", p, inflight, conns), func(b *testing.B) {
					benchParallel(b, TCPConfig{MaxInFlight: inflight, ConnsPerPeer: conns}, p)
				})
			}
		}
	}
}

func benchParallel(b *testing.B, cfg TCPConfig, p int) {
	cli, addr := benchPair(b, cfg)
	before := cli.Stats()
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(p)
	b.ResetTimer()
	var mu sync.Mutex
	var lat []time.Duration
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		it := CheckItem{Policy: "auth", Key: "ip:10.0.0." + strconv.FormatInt(seq.Add(1), 10), Hits: 1}
		mine := make([]time.Duration, 0, 4096)
		for pb.Next() {
			start := time.Now()
			if _, err := cli.Check(ctx, addr, it); err != nil {
				b.Error(err)
				return
			}
			if len(mine) < cap(mine) {
				mine = append(mine, time.Since(start))
			}
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	reportLatency(b, lat)
	st := cli.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	if f := st.CheckFrames - before.CheckFrames; f > 0 {
		b.ReportMetric(float64(st.ChecksSent-before.ChecksSent)/float64(f), "checks/frame")
	}
}

// BenchmarkCheckMany100 sends a caller's own batch of 100 checks per op;
// decisions/s counts the checks.
func BenchmarkCheckMany100(b *testing.B) {
	cli, addr := benchPair(b, TCPConfig{})
	items := benchItems(100)
	out := make([]CheckResult, len(items))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := cli.CheckMany(ctx, addr, items, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(items))/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkCodecRatio alternates a hand-written and a reflection round
// trip (encode + decode) of the same batch of 100 checks and of its 100
// results, and reports how many times slower reflection is: interleaving
// keeps the ratio honest on a noisy, shared machine.
func BenchmarkCodecRatio(b *testing.B) {
	items := benchItems(100)
	results := make([]CheckResult, 100)
	wi := make([]wireItem, len(items))
	for i, it := range items {
		wi[i] = wireItem{Policy: it.Policy, Key: it.Key, Hits: it.Hits}
	}
	wr := make([]wireResult, len(results))
	var hand, refl time.Duration
	var buf []byte
	var outI []CheckItem
	var outR []CheckResult
	in := make(interner)
	var rbuf bytes.Buffer
	enc := msgpack.NewEncoder(&rbuf)
	rd := bytes.NewReader(nil)
	dec := msgpack.NewDecoder(rd)
	var gotI []wireItem
	var gotR []wireResult
	for b.Loop() {
		t0 := time.Now()
		buf = appendCheckBatch(buf[:0], items)
		outI, _ = decodeCheckBatch(buf, outI, in)
		buf = appendResultBatch(buf[:0], results)
		outR, _ = decodeResultBatch(buf, outR)
		t1 := time.Now()
		rbuf.Reset()
		_ = enc.Encode(wi)
		rd.Reset(rbuf.Bytes())
		dec.Reset(rd)
		gotI = gotI[:0]
		_ = dec.Decode(&gotI)
		rbuf.Reset()
		_ = enc.Encode(wr)
		rd.Reset(rbuf.Bytes())
		dec.Reset(rd)
		gotR = gotR[:0]
		_ = dec.Decode(&gotR)
		t2 := time.Now()
		hand += t1.Sub(t0)
		refl += t2.Sub(t1)
	}
	if len(outI) != 100 || len(gotI) != 100 || len(outR) != 100 || len(gotR) != 100 {
		b.Fatal("codec round trip lost items")
	}
	b.ReportMetric(float64(hand.Nanoseconds())/float64(b.N)/200, "hand-ns/msg")
	b.ReportMetric(float64(refl.Nanoseconds())/float64(b.N)/200, "reflect-ns/msg")
	b.ReportMetric(float64(refl)/float64(hand), "reflect/hand")
}

// BenchmarkMesh3 runs three transports that all check against each other,
// as a 3-node cluster whose keys are all remote would: 2p x GOMAXPROCS
// callers spread over the 3 nodes, each sending to both peers in turn.
func BenchmarkMesh3(b *testing.B) {
	for _, p := range []int{16, 64, 256} {
		b.Run(fmt.Sprintf("p=%d", p), func(b *testing.B) {
			nodes := make([]*TCP, 3)
			for i := range nodes {
				nodes[i] = newTCP(b, TCPConfig{}, &echoHandler{})
			}
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(p)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				n := seq.Add(1)
				from := nodes[n%3]
				peers := [2]string{nodes[(n+1)%3].Addr(), nodes[(n+2)%3].Addr()}
				it := CheckItem{Policy: "auth", Key: "ip:10.0.0." + strconv.FormatInt(n, 10), Hits: 1}
				for i := 0; pb.Next(); i++ {
					if _, err := from.Check(ctx, peers[i&1], it); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			var frames, checks uint64
			for _, t := range nodes {
				st := t.Stats()
				frames += st.CheckFrames
				checks += st.ChecksSent
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
			b.ReportMetric(float64(checks)/float64(max(frames, 1)), "checks/frame")
		})
	}
}
