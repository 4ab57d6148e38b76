package bucket_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

func TestSanitize(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	skew := time.Second
	sliding := bucket.Policy{Name: "auth", Limit: 10, Window: 15 * time.Minute}
	fixed := bucket.Policy{Name: "f", Algorithm: bucket.FixedWindow, Limit: 10, Window: time.Minute}
	gcra := bucket.Policy{Name: "g", Algorithm: bucket.GCRA, Limit: 5, Window: time.Second, Burst: 4}

	// Every state Take writes passes unchanged but for Idle, at any time
	// up to skew later on the sender's clock.
	for _, p := range []bucket.Policy{sliding, fixed, gcra} {
		var s bucket.State
		for i := range 30 {
			at := now.Add(time.Duration(i) * 7 * time.Second)
			bucket.Take(p, &s, 1, at)
			got, err := bucket.Sanitize(p, s, at.Add(-skew), skew)
			if err != nil {
				t.Fatalf("%s: valid state %+v refused: %v", p.Name, s, err)
			}
			if got.T != s.T || got.Idle != s.Idle || (p.Algorithm != bucket.GCRA && got.Count != s.Count) {
				t.Fatalf("%s: %+v sanitised to %+v", p.Name, s, got)
			}
		}
	}

	width := sliding.Window.Microseconds() / bucket.Slots
	cur := now.UnixMicro() / width * width
	var full [bucket.Slots + 1]uint32
	for i := range full {
		full[i] = math.MaxUint32
	}
	span := uint32(sliding.Window.Milliseconds())
	for _, c := range []struct {
		name string
		p    bucket.Policy
		s    bucket.State
	}{
		{"slots in the future", sliding, bucket.State{T: cur + 20*width, Count: [9]uint32{1}, Span: span}},
		{"maximal counts", sliding, bucket.State{T: cur, Count: full, Span: span}},
		{"over the limit", sliding, bucket.State{T: cur, Count: [9]uint32{5, 6}, Span: span}},
		{"not a slot start", sliding, bucket.State{T: cur + 1, Count: [9]uint32{1}, Span: span}},
		{"fixed: future window", fixed, bucket.State{T: now.UnixMicro() + 60e6, Count: [9]uint32{1}, Span: 60000}},
		{"fixed: hits outside", fixed, bucket.State{T: now.Truncate(time.Minute).UnixMicro(), Count: [9]uint32{1, 1}, Span: 60000}},
		{"gcra: TAT far ahead", gcra, bucket.State{T: now.UnixMicro() + 10e6}},
		{"gcra: TAT maximal", gcra, bucket.State{T: math.MaxInt64}},
	} {
		if got, err := bucket.Sanitize(c.p, c.s, now, skew); !errors.Is(err, bucket.ErrInvalidState) {
			t.Errorf("%s: %+v passed as %+v", c.name, c.s, got)
		}
	}

	// What cannot be told from a valid state is made harmless.
	got, err := bucket.Sanitize(sliding, bucket.State{T: cur, Count: [9]uint32{3}, Idle: math.MaxUint32, Span: span}, now, skew)
	if err != nil || int64(got.Idle) > now.Unix()+17*60 {
		t.Errorf("Idle not lowered: %+v, %v", got, err)
	}
	got, err = bucket.Sanitize(gcra, bucket.State{T: now.UnixMicro(), Count: full, Span: 7}, now, skew)
	if err != nil || got.Count != [9]uint32{} || got.Span != 0 {
		t.Errorf("gcra counts kept: %+v, %v", got, err)
	}
}
