package cluster

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
)

// FuzzDecodeHandoff feeds any body to the hand-off and copy decoder, and
// every counter it yields to bucket.Sanitize: no panic, no allocation
// beyond the message's bound; the receivers' one-pass decoder reads
// nothing msgpack's does not, and reads it the same; what decodes
// re-encodes to the same message;
// what Sanitize passes is a state no more ahead of now than it allows and
// within the limit. Seeds are in testdata/fuzz/FuzzDecodeHandoff.
func FuzzDecodeHandoff(f *testing.F) {
	good, _ := msgpack.Marshal(handoffMsg{From: "node-1", Version: 1, Items: []handoffItem{
		{Policy: "auth", Key: "ip:1", T: 1_700_000_000_000_000, Count: [9]uint32{1, 2}, Idle: 1_700_001_000, Span: 900_000},
		{Policy: "api_limit", Key: "ip:2", T: 1_700_000_000_200_000, Idle: 1_700_000_001},
	}})
	future, _ := msgpack.Marshal(handoffMsg{From: "x", Version: 1, Items: []handoffItem{{Policy: "auth", Key: "k", T: math.MaxInt64, Count: [9]uint32{math.MaxUint32}, Span: 900_000}}})
	f.Add(good)
	f.Add(future)
	f.Add([]byte{0x82, 0xa1, 'v', 0x01, 0xa1, 'i', 0xdd, 0xff, 0xff, 0xff, 0xff})
	// Reflection's form (int64 and uint32 in full), an unknown field of
	// nested values, bin strings and nil.
	viaReflect, _ := msgpack.Marshal(map[string]any{"v": uint8(1), "f": "n", "x": []any{map[string]any{"y": 1.5}, nil, true, []byte{1}},
		"i": []map[string]any{{"p": []byte("auth"), "k": "ip:1", "t": int64(-5), "c": make([]uint32, bucket.Slots+1), "e": uint32(7), "z": nil}}})
	f.Add(viaReflect)
	f.Add([]byte{0x83, 0xa1, 'f', 0xc0, 0xa1, 'v', 0x01, 0xa1, 'i', 0xc0})
	policies := map[string]bucket.Policy{}
	for _, p := range DefaultPolicies() {
		policies[p.Name] = p
	}
	policies["fixed"] = bucket.Policy{Name: "fixed", Algorithm: bucket.FixedWindow, Limit: 3, Window: time.Minute}
	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, body []byte) {
		// The one-pass decoder (the receivers') reads a subset of what
		// msgpack's does, the same way.
		var fast handoffMsg
		fastErr := fast.decode(body)
		var msg handoffMsg
		if err := msgpack.Unmarshal(body, &msg); err != nil {
			if fastErr == nil {
				t.Fatalf("decode read %+v where msgpack fails: %v", fast, err)
			}
			return
		}
		if fastErr == nil && (fast.From != msg.From || fast.Version != msg.Version || len(fast.Items) != len(msg.Items) ||
			(len(msg.Items) > 0 && !reflect.DeepEqual(fast.Items, msg.Items))) {
			t.Fatalf("decode read %+v, msgpack %+v", fast, msg)
		}
		if len(msg.Items) > handoffChunk {
			t.Fatalf("%d items decoded, at most %d", len(msg.Items), handoffChunk)
		}
		again, err := msgpack.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		var back handoffMsg
		if err := msgpack.Unmarshal(again, &back); err != nil || back.From != msg.From || len(back.Items) != len(msg.Items) ||
			(len(msg.Items) > 0 && !reflect.DeepEqual(back.Items, msg.Items)) {
			t.Fatalf("round trip: %+v, want %+v (%v)", back, msg, err)
		}
		for _, it := range msg.Items {
			for _, p := range policies {
				st, err := bucket.Sanitize(p, bucket.State{T: it.T, Count: it.Count, Idle: it.Idle, Span: it.Span}, now, MaxClockSkew)
				if err != nil {
					continue
				}
				ahead := st.T - now.Add(MaxClockSkew).UnixMicro()
				var sum uint64
				for _, c := range st.Count {
					sum += uint64(c)
				}
				switch p.Algorithm {
				case bucket.GCRA, bucket.TokenBucket:
					if ahead > p.Capacity()*(p.Window.Microseconds()/p.Limit) || sum != 0 {
						t.Fatalf("%s: %+v passed", p.Name, st)
					}
				default:
					if ahead > 0 || sum > uint64(p.Limit) {
						t.Fatalf("%s: %+v passed", p.Name, st)
					}
				}
				var d bucket.State = st
				bucket.Take(p, &d, 1, now) // must not panic
			}
		}
	})
}

// FuzzDecodeCommand feeds any log entry to the state machine's decoder
// and checks: no panic; what decodes and validates applies or is refused
// without changing the table it was applied to; it re-encodes to a
// command that decodes the same. Seeds are in testdata/fuzz/FuzzDecodeCommand.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range []string{
		`{"op":"set_policy","policy":{"name":"auth","limit":4294967295,"window_ms":1}}`,
		`{"op":"delete_policy","name":"api_limit"}`,
		`{"op":"delete_policy","name":"api_limit","force":true}`,
		`{"op":"set_override","name":"auth","key":"vip","limit":20}`,
		`{"op":"delete_override","name":"auth","key":"vip"}`,
		`{"op":"seed","policies":[{"name":"a","limit":1,"window_ms":1000}]}`,
		`{"op":"set_policy","policy":{"name":"g","algorithm":"gcra","limit":5,"window_ms":1000,"burst":9223372036854775807}}`,
		`{"OP":"delete_policy","name":"x"}`,
		`{"op":"delete_policy","name":"x","name":"y"}`,
		`{"op":"set_policy","policy":`,
	} {
		f.Add([]byte(s))
	}
	start := &policyState{Version: 1, Seeded: true, Policies: map[string]bucket.Policy{}}
	for _, p := range DefaultPolicies() {
		start.Policies[p.Name] = p
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCommand(b)
		if err != nil {
			return
		}
		if err := c.validate(DefaultMaxKeyLen); err != nil {
			return
		}
		before, _ := json.Marshal(start)
		next, err := start.apply(c)
		after, _ := json.Marshal(start)
		if string(before) != string(after) {
			t.Fatal("apply changed the state it was applied to")
		}
		if err == nil {
			if len(next.Policies) > MaxPolicies {
				t.Fatalf("%d policies", len(next.Policies))
			}
			for _, p := range next.Policies {
				if err := p.Validate(); err != nil {
					t.Fatalf("applied an invalid policy: %v", err)
				}
			}
		}
		enc, err := encodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := decodeCommand(enc)
		if err != nil {
			t.Fatalf("%s does not decode: %v", enc, err)
		}
		if e2, _ := encodeCommand(c2); string(e2) != string(enc) {
			t.Fatalf("round trip: %s, want %s", e2, enc)
		}
	})
}
