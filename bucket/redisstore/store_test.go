package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/buckettest"
)

func TestConformance(t *testing.T) {
	url := testURL(t)
	buckettest.RunStoreTests(t, func(t *testing.T) bucket.Store {
		return newTestStore(t, url)
	})
}

func TestKeyLayoutAndExpiry(t *testing.T) {
	url := testURL(t)
	s := newTestStore(t, url, func(o *Options) { o.UseCallerTime = false })
	rc := redis.NewClient(&redis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(url, "redis://"), "/0"), DisableIdentity: true})
	defer rc.Close()
	ctx := context.Background()

	k := bucket.Key{Policy: "auth", ID: "ip:1.2.3.4"}
	if got, want := s.KeyFor(k), s.opts.Prefix+"{\x04authip:1.2.3.4}"; got != want {
		t.Fatalf("key %q, want %q", got, want)
	}
	p := bucket.Policy{Name: "auth", Limit: 10, Window: 15 * time.Minute}
	if _, err := s.Take(ctx, k, p, 1, time.Time{}); err != nil {
		t.Fatal(err)
	}
	v, err := rc.Get(ctx, s.KeyFor(k)).Result()
	if err != nil {
		t.Fatalf("counter not stored under %q: %v", s.KeyFor(k), err)
	}
	if len(v) != 52 {
		t.Fatalf("sliding-window state is %d bytes, want 52", len(v))
	}
	// The hit stays counted for at most window + one slot: the key must
	// expire then, and not much earlier.
	ttl := rc.PTTL(ctx, s.KeyFor(k)).Val()
	if ttl > p.Window+p.Window/bucket.Slots || ttl < p.Window {
		t.Fatalf("ttl %v outside [window, window+slot]", ttl)
	}

	g := bucket.Policy{Name: "g", Algorithm: bucket.GCRA, Limit: 10, Window: time.Second, Burst: 4}
	gk := bucket.Key{Policy: "g", ID: "x"}
	if _, err := s.Take(ctx, gk, g, 3, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if v := rc.Get(ctx, s.KeyFor(gk)).Val(); len(v) != 8 {
		t.Fatalf("gcra state is %d bytes, want 8", len(v))
	}
	// Three hits at 100ms each: the TAT runs 300ms ahead.
	if ttl := rc.PTTL(ctx, s.KeyFor(gk)).Val(); ttl > 300*time.Millisecond || ttl < 200*time.Millisecond {
		t.Fatalf("gcra ttl %v, want about 300ms", ttl)
	}

	// A peek of a fresh key writes nothing.
	pk := bucket.Key{Policy: "auth", ID: "peek"}
	if d, err := s.Take(ctx, pk, p, 0, time.Time{}); err != nil || !d.Allowed || d.Remaining != 10 {
		t.Fatalf("peek: %+v %v", d, err)
	}
	if n := rc.Exists(ctx, s.KeyFor(pk)).Val(); n != 0 {
		t.Fatal("a peek stored a counter")
	}
}

// A counter stored in the layouts without idle second and span (44 and 12
// bytes) is read as one written under another window: its hits are kept,
// in the current slot or window, and it is rewritten in the new layout.
func TestOlderLayoutsKeepTheirHits(t *testing.T) {
	url := testURL(t)
	s := newTestStore(t, url)
	rc := redis.NewClient(&redis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(url, "redis://"), "/0"), DisableIdentity: true})
	defer rc.Close()
	ctx := context.Background()
	now := buckettest.Epoch.Add(90 * time.Second)
	for _, tc := range []struct {
		alg  bucket.Algorithm
		size int
		old  []byte
	}{
		// 6 hits in the slot or window that holds now.
		{bucket.SlidingWindow, 52, packLE(now.Truncate(time.Minute/bucket.Slots).UnixMicro(), 0, 0, 0, 0, 0, 0, 0, 0, 6)},
		{bucket.FixedWindow, 20, packLE(now.Truncate(time.Minute).UnixMicro(), 6)},
	} {
		k := bucket.Key{Policy: "p", ID: tc.alg.String()}
		if len(tc.old) != tc.size-8 {
			t.Fatalf("%s: older layout is %d bytes", tc.alg, len(tc.old))
		}
		if err := rc.Set(ctx, s.KeyFor(k), tc.old, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		p := bucket.Policy{Name: "p", Algorithm: tc.alg, Limit: 10, Window: time.Minute}
		d, err := s.Take(ctx, k, p, 5, now)
		if err != nil || d.Allowed || d.Remaining != 4 {
			t.Errorf("%s: 5 hits on 6 of 10 stored in the older layout: %+v %v, want denied with 4 remaining", tc.alg, d, err)
		}
		if d, _ := s.Take(ctx, k, p, 4, now); !d.Allowed {
			t.Errorf("%s: the last 4 of 10: %+v, want allowed", tc.alg, d)
		}
		if v, err := rc.Get(ctx, s.KeyFor(k)).Result(); err != nil || len(v) != tc.size {
			t.Errorf("%s: rewritten as %d bytes (%v), want %d", tc.alg, len(v), err, tc.size)
		}
	}
}

// packLE packs an int64 and uint32s little-endian, as the script's
// struct.pack('<i8I4...') does.
func packLE(t int64, counts ...uint32) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(t))
	for _, c := range counts {
		b = binary.LittleEndian.AppendUint32(b, c)
	}
	return b
}

func TestInvalidPolicy(t *testing.T) {
	s := newTestStore(t, testURL(t))
	_, err := s.Take(context.Background(), bucket.Key{Policy: "p", ID: "k"}, bucket.Policy{Name: "p", Window: time.Second}, 1, time.Now())
	if !errors.Is(err, bucket.ErrInvalidPolicy) || errors.Is(err, bucket.ErrBackend) {
		t.Fatalf("zero limit: %v, want ErrInvalidPolicy and not ErrBackend", err)
	}
}

func TestClosed(t *testing.T) {
	s := newTestStore(t, testURL(t))
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	p := bucket.Policy{Name: "p", Limit: 1, Window: time.Second}
	if _, err := s.Take(context.Background(), bucket.Key{Policy: "p", ID: "k"}, p, 1, time.Now()); !errors.Is(err, ErrClosed) || !errors.Is(err, bucket.ErrBackend) {
		t.Fatalf("take after close: %v, want ErrClosed", err)
	}
	if err := s.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("ping after close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}
