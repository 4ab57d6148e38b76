package raftbolt

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openTemp opens a store in a fresh temporary directory and closes it at the
// end of the test. Without fsync unless the test asks for it.
func openTemp(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "raft.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// entry is the log stored at index i by these tests: its content is derived
// from i, so a read can check it got the entry it asked for.
func entry(i uint64) *raft.Log {
	return &raft.Log{
		Index:      i,
		Term:       i*7 + 1,
		Type:       raft.LogCommand,
		Data:       []byte(fmt.Sprintf("data-%d", i)),
		AppendedAt: time.Unix(1_700_000_000+int64(i), int64(i)).UTC(),
	}
}

func entries(first, last uint64) []*raft.Log {
	var ls []*raft.Log
	for i := first; i <= last; i++ {
		ls = append(ls, entry(i))
		if i == math.MaxUint64 {
			break
		}
	}
	return ls
}

// equalLog reports whether two logs are equal, comparing AppendedAt as an
// instant (location and monotonic reading aside) and the rest exactly,
// including nil against empty slices.
func equalLog(a, b *raft.Log) bool {
	if !a.AppendedAt.Equal(b.AppendedAt) {
		return false
	}
	a2, b2 := *a, *b
	a2.AppendedAt, b2.AppendedAt = time.Time{}, time.Time{}
	return reflect.DeepEqual(a2, b2)
}

func checkIndexes(t *testing.T, s *Store, wantFirst, wantLast uint64) {
	t.Helper()
	first, err := s.FirstIndex()
	if err != nil || first != wantFirst {
		t.Errorf("FirstIndex() = %d, %v; want %d, nil", first, err, wantFirst)
	}
	last, err := s.LastIndex()
	if err != nil || last != wantLast {
		t.Errorf("LastIndex() = %d, %v; want %d, nil", last, err, wantLast)
	}
}

func TestEmptyStore(t *testing.T) {
	s := openTemp(t, Options{NoSync: true})
	checkIndexes(t, s, 0, 0)

	var l raft.Log
	for _, i := range []uint64{0, 1, math.MaxUint64} {
		if err := s.GetLog(i, &l); err != raft.ErrLogNotFound {
			t.Errorf("GetLog(%d) = %v, want raft.ErrLogNotFound itself", i, err)
		}
	}
	// raft recognises a missing stable key by the error's text alone.
	v, err := s.Get([]byte("CurrentTerm"))
	if v != nil || err == nil || err.Error() != "not found" || !errors.Is(err, ErrKeyNotFound) {
		t.Errorf(`Get(missing) = %q, %v; want nil and an error reading exactly "not found"`, v, err)
	}
	n, err := s.GetUint64([]byte("CurrentTerm"))
	if n != 0 || err == nil || err.Error() != "not found" {
		t.Errorf(`GetUint64(missing) = %d, %v; want 0 and an error reading exactly "not found"`, n, err)
	}
	// What raft does with those answers on first start.
	snaps := raft.NewInmemSnapshotStore()
	existing, err := raft.HasExistingState(s, s, snaps)
	if err != nil || existing {
		t.Errorf("raft.HasExistingState(empty) = %v, %v; want false, nil", existing, err)
	}
	if err := s.StoreLogs(nil); err != nil {
		t.Errorf("StoreLogs(nil) = %v", err)
	}
	checkIndexes(t, s, 0, 0)
}

func TestLogRanges(t *testing.T) {
	type span struct{ first, last uint64 }
	tests := []struct {
		name    string
		store   []span // stored in this order, one StoreLogs call each
		deletes []span // then deleted in this order
		want    []span // the entries left
	}{
		{name: "one", store: []span{{1, 1}}, want: []span{{1, 1}}},
		{name: "contiguous", store: []span{{1, 10}}, want: []span{{1, 10}}},
		{name: "starts late", store: []span{{100, 110}}, want: []span{{100, 110}}},
		{name: "gap allowed", store: []span{{1, 3}, {10, 12}}, want: []span{{1, 3}, {10, 12}}},
		{name: "out of order batches", store: []span{{5, 8}, {1, 4}}, want: []span{{1, 8}}},
		{name: "compact prefix", store: []span{{1, 10}}, deletes: []span{{1, 5}}, want: []span{{6, 10}}},
		{name: "truncate suffix", store: []span{{1, 10}}, deletes: []span{{8, 10}}, want: []span{{1, 7}}},
		{name: "middle", store: []span{{1, 10}}, deletes: []span{{4, 6}}, want: []span{{1, 3}, {7, 10}}},
		{name: "all", store: []span{{1, 10}}, deletes: []span{{1, 10}}, want: nil},
		{name: "beyond both ends", store: []span{{5, 10}}, deletes: []span{{0, math.MaxUint64}}, want: nil},
		{name: "overlapping front", store: []span{{5, 10}}, deletes: []span{{1, 7}}, want: []span{{8, 10}}},
		{name: "overlapping back", store: []span{{5, 10}}, deletes: []span{{9, math.MaxUint64}}, want: []span{{5, 8}}},
		{name: "empty range", store: []span{{1, 10}}, deletes: []span{{6, 5}}, want: []span{{1, 10}}},
		{name: "missing range", store: []span{{1, 10}}, deletes: []span{{20, 30}}, want: []span{{1, 10}}},
		{name: "single", store: []span{{1, 10}}, deletes: []span{{10, 10}}, want: []span{{1, 9}}},
		{name: "max index", store: []span{{math.MaxUint64 - 2, math.MaxUint64}}, want: []span{{math.MaxUint64 - 2, math.MaxUint64}}},
		// Many pages: the cursor must not skip entries while it deletes.
		{name: "many pages", store: []span{{1, 6000}}, deletes: []span{{1, 3000}, {5990, 6000}}, want: []span{{3001, 5989}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTemp(t, Options{NoSync: true})
			var top uint64
			for _, sp := range tt.store {
				if err := s.StoreLogs(entries(sp.first, sp.last)); err != nil {
					t.Fatalf("StoreLogs(%d..%d): %v", sp.first, sp.last, err)
				}
				top = max(top, sp.last)
			}
			for _, sp := range tt.deletes {
				if err := s.DeleteRange(sp.first, sp.last); err != nil {
					t.Fatalf("DeleteRange(%d, %d): %v", sp.first, sp.last, err)
				}
			}
			var wantFirst, wantLast uint64
			if len(tt.want) > 0 {
				wantFirst, wantLast = tt.want[0].first, tt.want[len(tt.want)-1].last
			}
			checkIndexes(t, s, wantFirst, wantLast)

			present := func(i uint64) bool {
				for _, sp := range tt.want {
					if i >= sp.first && i <= sp.last {
						return true
					}
				}
				return false
			}
			// Every index from just below the first stored to just above the
			// last is either the expected entry or ErrLogNotFound.
			low := tt.store[0].first
			for _, sp := range tt.store {
				low = min(low, sp.first)
			}
			if low > 0 {
				low--
			}
			for i := low; ; i++ {
				var got raft.Log
				err := s.GetLog(i, &got)
				switch {
				case present(i) && err != nil:
					t.Fatalf("GetLog(%d) = %v, want the entry", i, err)
				case present(i) && !equalLog(&got, entry(i)):
					t.Fatalf("GetLog(%d) = %+v, want %+v", i, got, *entry(i))
				case !present(i) && err != raft.ErrLogNotFound:
					t.Fatalf("GetLog(%d) = %v, want raft.ErrLogNotFound", i, err)
				}
				if i >= top || i == math.MaxUint64 {
					break
				}
			}
		})
	}
}

func TestLogRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		log  raft.Log
	}{
		{name: "zero fields", log: raft.Log{Index: 1}},
		{name: "command", log: raft.Log{Index: 2, Term: 3, Type: raft.LogCommand, Data: []byte("set x=1")}},
		{name: "noop nil data", log: raft.Log{Index: 3, Term: 1, Type: raft.LogNoop}},
		{name: "empty not nil", log: raft.Log{Index: 4, Term: 1, Data: []byte{}, Extensions: []byte{}}},
		{name: "extensions", log: raft.Log{Index: 5, Term: 2, Type: raft.LogConfiguration, Data: []byte{0, 1, 2}, Extensions: []byte("ext")}},
		{name: "extensions only", log: raft.Log{Index: 6, Extensions: []byte{0xff}}},
		{name: "barrier", log: raft.Log{Index: 7, Type: raft.LogBarrier}},
		{name: "unknown type", log: raft.Log{Index: 8, Type: raft.LogType(200)}},
		{name: "max values", log: raft.Log{Index: math.MaxUint64, Term: math.MaxUint64, Type: 255}},
		{name: "appended now", log: raft.Log{Index: 9, Term: 1, AppendedAt: time.Now()}},
		{name: "appended nanos", log: raft.Log{Index: 10, AppendedAt: time.Date(2026, 11, 26, 6, 0, 0, 999_999_999, time.UTC)}},
		{name: "appended before 1970", log: raft.Log{Index: 11, AppendedAt: time.Date(1901, 1, 1, 0, 0, 0, 1, time.UTC)}},
		{name: "appended far future", log: raft.Log{Index: 12, AppendedAt: time.Date(9999, 12, 31, 23, 59, 59, 5, time.UTC)}},
		{name: "appended other zone", log: raft.Log{Index: 13, AppendedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))}},
		{name: "large data", log: raft.Log{Index: 14, Data: bytes.Repeat([]byte("abc"), 100_000)}},
	}
	s := openTemp(t, Options{NoSync: true})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.log
			if err := s.StoreLog(&in); err != nil {
				t.Fatalf("StoreLog: %v", err)
			}
			// A reused Log with stale fields is overwritten entirely.
			got := raft.Log{Index: 99, Term: 99, Type: raft.LogBarrier, Data: []byte("stale"), Extensions: []byte("stale"), AppendedAt: time.Now()}
			if err := s.GetLog(tt.log.Index, &got); err != nil {
				t.Fatalf("GetLog: %v", err)
			}
			if !equalLog(&got, &tt.log) {
				t.Fatalf("GetLog = %+v, want %+v", got, tt.log)
			}
			// The slices belong to the caller: writing to them, or
			// appending to Data, changes neither the store nor Extensions.
			for i := range got.Data {
				got.Data[i] ^= 0xff
			}
			got.Data = append(got.Data, "more"...)
			if !bytes.Equal(got.Extensions, tt.log.Extensions) {
				t.Fatalf("append to Data changed Extensions to %q", got.Extensions)
			}
			var again raft.Log
			if err := s.GetLog(tt.log.Index, &again); err != nil || !equalLog(&again, &tt.log) {
				t.Fatalf("GetLog after the caller wrote to the slices = %+v, %v; want %+v", again, err, tt.log)
			}
		})
	}
}

func TestStoreLogOverwrites(t *testing.T) {
	s := openTemp(t, Options{NoSync: true})
	if err := s.StoreLogs(entries(1, 5)); err != nil {
		t.Fatal(err)
	}
	// A new leader's entries replace a follower's conflicting ones.
	replaced := &raft.Log{Index: 3, Term: 100, Data: []byte("new")}
	if err := s.StoreLog(replaced); err != nil {
		t.Fatal(err)
	}
	var got raft.Log
	if err := s.GetLog(3, &got); err != nil || !equalLog(&got, replaced) {
		t.Errorf("GetLog(3) = %+v, %v; want %+v", got, err, *replaced)
	}
	checkIndexes(t, s, 1, 5)
}

func TestStable(t *testing.T) {
	type op struct {
		set    string // key to Set (with val) or, with isUint, SetUint64 (with n)
		val    []byte
		isUint bool
		n      uint64
	}
	tests := []struct {
		name    string
		ops     []op
		key     string
		want    []byte // Get(key); nil means ErrKeyNotFound
		wantN   uint64 // GetUint64(key) when wantErr is nil
		wantErr error  // from GetUint64(key)
	}{
		{name: "missing", key: "k", want: nil, wantErr: ErrKeyNotFound},
		{name: "bytes", ops: []op{{set: "k", val: []byte("v")}}, key: "k", want: []byte("v"), wantErr: ErrCorrupt},
		{name: "empty value", ops: []op{{set: "k", val: []byte{}}}, key: "k", want: []byte{}, wantErr: ErrCorrupt},
		{name: "nil value reads empty", ops: []op{{set: "k", val: nil}}, key: "k", want: []byte{}, wantErr: ErrCorrupt},
		{name: "overwrite", ops: []op{{set: "k", val: []byte("a")}, {set: "k", val: []byte("bb")}}, key: "k", want: []byte("bb"), wantErr: ErrCorrupt},
		{name: "other key", ops: []op{{set: "a", val: []byte("x")}}, key: "b", want: nil, wantErr: ErrKeyNotFound},
		{name: "uint zero", ops: []op{{set: "t", isUint: true, n: 0}}, key: "t", want: make([]byte, 8), wantN: 0},
		{name: "uint", ops: []op{{set: "t", isUint: true, n: 42}}, key: "t", want: []byte{0, 0, 0, 0, 0, 0, 0, 42}, wantN: 42},
		{name: "uint max", ops: []op{{set: "t", isUint: true, n: math.MaxUint64}}, key: "t", want: bytes.Repeat([]byte{0xff}, 8), wantN: math.MaxUint64},
		{name: "uint overwrite", ops: []op{{set: "t", isUint: true, n: 5}, {set: "t", isUint: true, n: 6}}, key: "t", want: []byte{0, 0, 0, 0, 0, 0, 0, 6}, wantN: 6},
		{name: "8 bytes read as uint", ops: []op{{set: "t", val: []byte{0, 0, 0, 0, 0, 0, 1, 0}}}, key: "t", want: []byte{0, 0, 0, 0, 0, 0, 1, 0}, wantN: 256},
		{name: "binary key", ops: []op{{set: "\x00\xff", val: []byte("v")}}, key: "\x00\xff", want: []byte("v"), wantErr: ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTemp(t, Options{NoSync: true})
			for _, o := range tt.ops {
				var err error
				if o.isUint {
					err = s.SetUint64([]byte(o.set), o.n)
				} else {
					err = s.Set([]byte(o.set), o.val)
				}
				if err != nil {
					t.Fatalf("set %q: %v", o.set, err)
				}
			}
			got, err := s.Get([]byte(tt.key))
			if tt.want == nil {
				if got != nil || !errors.Is(err, ErrKeyNotFound) {
					t.Errorf("Get(%q) = %q, %v; want nil, ErrKeyNotFound", tt.key, got, err)
				}
			} else if err != nil || got == nil || !bytes.Equal(got, tt.want) {
				t.Errorf("Get(%q) = %q (nil: %v), %v; want %q", tt.key, got, got == nil, err, tt.want)
			}
			n, err := s.GetUint64([]byte(tt.key))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && n != tt.wantN) || (tt.wantErr != nil && n != 0) {
				t.Errorf("GetUint64(%q) = %d, %v; want %d, %v", tt.key, n, err, tt.wantN, tt.wantErr)
			}
		})
	}
}

func TestStableCopies(t *testing.T) {
	s := openTemp(t, Options{NoSync: true})
	val := []byte("vote")
	if err := s.Set([]byte("LastVoteCand"), val); err != nil {
		t.Fatal(err)
	}
	val[0] = 'X' // the caller reuses its buffer
	got, err := s.Get([]byte("LastVoteCand"))
	if err != nil || string(got) != "vote" {
		t.Fatalf("Get = %q, %v; want vote", got, err)
	}
	got[0] = 'Y' // the caller writes to what it got
	again, _ := s.Get([]byte("LastVoteCand"))
	if string(again) != "vote" {
		t.Fatalf("Get after the caller wrote to the result = %q, want vote", again)
	}
	if err := s.Set(nil, []byte("v")); err == nil {
		t.Error("Set(empty key) = nil, want an error")
	}
}

func TestCorruptValues(t *testing.T) {
	good := appendLog(nil, &raft.Log{Index: 1, Term: 2, Data: []byte("abc"), Extensions: []byte("e"), AppendedAt: time.Unix(5, 6)})
	tests := []struct {
		name string
		val  []byte
	}{
		{name: "empty", val: []byte{}},
		{name: "version", val: append([]byte{9}, good[1:]...)},
		{name: "unknown flag", val: append([]byte{good[0], good[1], good[2] | 0x80}, good[3:]...)},
		{name: "truncated header", val: good[:2]},
		{name: "truncated data", val: good[:len(good)-3]},
		{name: "trailing bytes", val: append(append([]byte{}, good...), 0)},
		{name: "wrong index", val: appendLog(nil, &raft.Log{Index: 2})},
		{name: "length beyond end", val: []byte{formatVersion, 0, flagData, 1, 0, 5, 'a'}},
	}
	for i := range len(good) - 1 {
		tests = append(tests, struct {
			name string
			val  []byte
		}{name: fmt.Sprintf("cut at %d", i), val: good[:i]})
	}
	s := openTemp(t, Options{NoSync: true})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketLogs).Put([]byte{0, 0, 0, 0, 0, 0, 0, 1}, tt.val)
			})
			if err != nil {
				t.Fatal(err)
			}
			var l raft.Log
			if err := s.GetLog(1, &l); !errors.Is(err, ErrCorrupt) {
				t.Errorf("GetLog(%x) = %v, want ErrCorrupt", tt.val, err)
			}
		})
	}
}

// FuzzDecodeLog checks that decoding never panics on arbitrary bytes, and
// that an encoded entry decodes to itself.
func FuzzDecodeLog(f *testing.F) {
	f.Add(appendLog(nil, entry(1)), uint64(1), []byte("d"), []byte(nil), int64(0), uint8(0))
	f.Add([]byte{1, 0, 7, 1, 1}, uint64(7), []byte(nil), []byte("ext"), int64(-1), uint8(5))
	f.Fuzz(func(t *testing.T, raw []byte, index uint64, data, ext []byte, sec int64, typ uint8) {
		var l raft.Log
		_ = decodeLog(index, raw, &l)

		in := raft.Log{Index: index, Term: index ^ 0x55, Type: raft.LogType(typ), Data: data, Extensions: ext}
		if sec != 0 {
			in.AppendedAt = time.Unix(sec, 0).UTC()
		}
		if err := decodeLog(index, appendLog(nil, &in), &l); err != nil || !equalLog(&l, &in) {
			t.Fatalf("round trip of %+v = %+v, %v", in, l, err)
		}
	})
}

func TestReopenKeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := Open(path, Options{}) // with fsync, as in production
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(entries(1, 50)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(1, 9); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("node-2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openAt(t, path, Options{})
	checkIndexes(t, s, 10, 50)
	for i := uint64(10); i <= 50; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil || !equalLog(&l, entry(i)) {
			t.Fatalf("GetLog(%d) after reopen = %+v, %v; want %+v", i, l, err, *entry(i))
		}
	}
	if n, err := s.GetUint64([]byte("CurrentTerm")); n != 7 || err != nil {
		t.Errorf("GetUint64(CurrentTerm) after reopen = %d, %v; want 7", n, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); string(v) != "node-2" || err != nil {
		t.Errorf("Get(LastVoteCand) after reopen = %q, %v; want node-2", v, err)
	}
	existing, err := raft.HasExistingState(s, s, raft.NewInmemSnapshotStore())
	if err != nil || !existing {
		t.Errorf("raft.HasExistingState after reopen = %v, %v; want true", existing, err)
	}
}

func openAt(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestClosed(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "raft.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	var l raft.Log
	_, errFirst := s.FirstIndex()
	_, errLast := s.LastIndex()
	_, errGet := s.Get([]byte("k"))
	_, errUint := s.GetUint64([]byte("k"))
	for name, err := range map[string]error{
		"FirstIndex":  errFirst,
		"LastIndex":   errLast,
		"GetLog":      s.GetLog(1, &l),
		"StoreLog":    s.StoreLog(entry(1)),
		"DeleteRange": s.DeleteRange(1, 2),
		"Set":         s.Set([]byte("k"), []byte("v")),
		"SetUint64":   s.SetUint64([]byte("k"), 1),
		"Get":         errGet,
		"GetUint64":   errUint,
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestOpenLockedFileFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	first := openAt(t, path, Options{NoSync: true})

	const timeout = 100 * time.Millisecond
	start := time.Now()
	second, err := Open(path, Options{NoSync: true, LockTimeout: timeout})
	elapsed := time.Since(start)
	if err == nil {
		_ = second.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	t.Logf("second Open failed after %v: %v", elapsed, err)
	if elapsed > 10*timeout {
		t.Errorf("second Open took %v to fail, want about its LockTimeout %v", elapsed, timeout)
	}
	// The holder is unaffected and, once it closes, the file opens again.
	if err := first.StoreLog(entry(1)); err != nil {
		t.Fatalf("holder StoreLog after a failed Open: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again := openAt(t, path, Options{NoSync: true, LockTimeout: timeout})
	checkIndexes(t, again, 1, 1)
}

func TestOpenOptions(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "a.db"), Options{LockTimeout: -1}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("Open with a negative LockTimeout = %v, want ErrInvalidOptions", err)
	}
	if _, err := Open(filepath.Join(dir, "missing", "a.db"), Options{}); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(garbage, Options{}); err == nil {
		_ = s.Close()
		t.Error("Open of a file that is not a bbolt database succeeded")
	}
	for _, tt := range []struct {
		name string
		mode os.FileMode
		want os.FileMode
	}{
		{name: "default", mode: 0, want: 0o600},
		{name: "explicit", mode: 0o640, want: 0o640},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".db")
			openAt(t, path, Options{NoSync: true, Mode: tt.mode})
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != tt.want {
				t.Errorf("file mode = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestConcurrentUse runs writers, readers, a deleter and stable-store users
// at once (run it with -race), then checks the final state.
func TestConcurrentUse(t *testing.T) {
	s := openTemp(t, Options{NoSync: true})
	const (
		writers   = 4
		perWriter = 200
		batch     = 10
		doomed    = 9000 // entries 9001..9100 are deleted while the others write
	)
	if err := s.StoreLogs(entries(doomed+1, doomed+100)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range uint64(writers) {
		wg.Go(func() {
			base := w*1000 + 1
			for i := uint64(0); i < perWriter; i += batch {
				if err := s.StoreLogs(entries(base+i, base+i+batch-1)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for r := range 2 {
		wg.Go(func() {
			for i := range 500 {
				idx := uint64(r*1000 + i%perWriter + 1)
				var l raft.Log
				err := s.GetLog(idx, &l)
				if err == nil && !equalLog(&l, entry(idx)) {
					errs <- fmt.Errorf("GetLog(%d) read %+v", idx, l)
					return
				}
				if err != nil && err != raft.ErrLogNotFound {
					errs <- err
					return
				}
				first, err1 := s.FirstIndex()
				last, err2 := s.LastIndex()
				if err := errors.Join(err1, err2); err != nil {
					errs <- err
					return
				}
				if first > last {
					errs <- fmt.Errorf("FirstIndex %d > LastIndex %d", first, last)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := uint64(doomed + 1); i <= doomed+100; i++ {
			if err := s.DeleteRange(i, i); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Go(func() {
		for i := range uint64(200) {
			if err := s.SetUint64([]byte("CurrentTerm"), i); err != nil {
				errs <- err
				return
			}
			if n, err := s.GetUint64([]byte("CurrentTerm")); err != nil || n < i {
				errs <- fmt.Errorf("GetUint64 = %d, %v after SetUint64(%d)", n, err, i)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	checkIndexes(t, s, 1, (writers-1)*1000+perWriter)
	for w := range uint64(writers) {
		for i := w*1000 + 1; i <= w*1000+perWriter; i++ {
			var l raft.Log
			if err := s.GetLog(i, &l); err != nil || !equalLog(&l, entry(i)) {
				t.Fatalf("GetLog(%d) = %+v, %v", i, l, err)
			}
		}
	}
	for i := uint64(doomed + 1); i <= doomed+100; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != raft.ErrLogNotFound {
			t.Fatalf("GetLog(%d) of a deleted entry = %v, want ErrLogNotFound", i, err)
		}
	}
	if n, err := s.GetUint64([]byte("CurrentTerm")); n != 199 || err != nil {
		t.Errorf("GetUint64(CurrentTerm) = %d, %v; want 199", n, err)
	}
}
