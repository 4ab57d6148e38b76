package cluster

import (
	"bytes"
	"reflect"
	"slices"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"pgregory.net/rapid"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/internal/msgpackfit"
)

// reflectMsg and reflectItem are handoffMsg and handoffItem without the
// hand-written codec: what msgpack's reflection reads and writes.
type reflectMsg struct {
	From    string        `msgpack:"f,omitempty"`
	Version uint8         `msgpack:"v"`
	Items   []reflectItem `msgpack:"i"`
}

type reflectItem struct {
	Policy string                   `msgpack:"p"`
	Key    string                   `msgpack:"k"`
	T      int64                    `msgpack:"t"`
	Count  [bucket.Slots + 1]uint32 `msgpack:"c"`
	Idle   uint32                   `msgpack:"e"`
	Span   uint32                   `msgpack:"s,omitempty"`
}

// The hand-written codec round-trips every message, and reads and writes
// the same form as reflection over the struct tags, both ways.
func TestHandoffCodec(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		items := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) handoffItem {
			it := handoffItem{
				Policy: rapid.String().Draw(t, "policy"),
				Key:    rapid.String().Draw(t, "key"),
				T:      rapid.Int64().Draw(t, "t"),
				Idle:   rapid.Uint32().Draw(t, "idle"),
				Span:   rapid.SampledFrom([]uint32{0, 1, 60_000, 1<<32 - 1}).Draw(t, "span"),
			}
			for i := range it.Count {
				it.Count[i] = rapid.Uint32().Draw(t, "count")
			}
			return it
		}), 0, 20).Draw(t, "items")
		msg := handoffMsg{From: rapid.SampledFrom([]string{"", "node-1"}).Draw(t, "from"), Version: 1, Items: items}

		b, err := msgpack.Marshal(msg) // a value, as the senders pass it
		if err != nil {
			t.Fatal(err)
		}
		if a := msg.appendTo(nil); !bytes.Equal(a, b) {
			t.Fatalf("appendTo wrote %x, EncodeMsgpack %x", a, b)
		}
		var back handoffMsg
		if err := msgpack.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		fast := handoffMsg{Items: make([]handoffItem, 3)} // reused
		if err := fast.decode(b); err != nil || fast.From != msg.From || fast.Version != 1 || len(fast.Items) != len(items) || (len(items) > 0 && !reflect.DeepEqual(fast.Items, items)) {
			t.Fatalf("decode: %+v, want %+v (%v)", fast, msg, err)
		}
		if back.Version != 1 || back.From != msg.From || len(back.Items) != len(items) || (len(items) > 0 && !reflect.DeepEqual(back.Items, items)) {
			t.Fatalf("round trip: %+v, want %+v", back, msg)
		}

		var viaReflect reflectMsg
		if err := msgpack.Unmarshal(b, &viaReflect); err != nil {
			t.Fatalf("reflection cannot read the hand-written form: %v", err)
		}
		rb, err := msgpack.Marshal(&viaReflect)
		if err != nil {
			t.Fatal(err)
		}
		var fromReflect handoffMsg
		if err := msgpack.Unmarshal(rb, &fromReflect); err != nil {
			t.Fatalf("the hand-written decoder cannot read reflection's form: %v", err)
		}
		if len(items) > 0 && !reflect.DeepEqual(fromReflect.Items, items) {
			t.Fatalf("through reflection: %+v, want %+v", fromReflect.Items, items)
		}
		if err := fast.decode(rb); err != nil || (len(items) > 0 && !reflect.DeepEqual(fast.Items, items)) {
			t.Fatalf("decode of reflection's form: %+v, want %+v (%v)", fast.Items, items, err)
		}
	})
}

// Bad input is an error, never a panic or a huge allocation.
func TestHandoffCodecRefuses(t *testing.T) {
	tooMany, _ := msgpack.Marshal(map[string]any{"v": 1, "i": make([]int, handoffChunk+1)})
	shortCount, _ := msgpack.Marshal(map[string]any{"v": 1, "i": []map[string]any{{"p": "a", "c": []uint32{1, 2}}}})
	if msgpackfit.Fits([]byte("\x82\xa1v\x01\xa1i\x91\x81\xa1p\xdb\x7f\xff\xff\xff")) {
		t.Error("a string header announcing 2 GB in 16 bytes fits")
	}
	for name, b := range map[string][]byte{
		"empty":       {},
		"not a map":   {0x91, 0x01},
		"truncated":   {0x82, 0xa1, 'v'},
		"too many":    tooMany,
		"short count": shortCount,
	} {
		var m handoffMsg
		if err := msgpack.Unmarshal(b, &m); err == nil {
			t.Errorf("%s: decoded without an error: %+v", name, m)
		}
		if err := m.decode(b); err == nil {
			t.Errorf("%s: decode without an error: %+v", name, m)
		}
	}
}

// TestRefusedAnswer: the positions a hand-off's receiver refuses read
// back as the counters its sender keeps; an empty answer keeps none, and
// an answer naming a position past the chunk, or unreadable, is an error
// (the sender then keeps the whole chunk).
func TestRefusedAnswer(t *testing.T) {
	keep, err := refusedOf(refusedAnswer([]uint32{0, 3, 4}), 5)
	if err != nil || !slices.Equal(keep, []bool{true, false, false, true, true}) {
		t.Errorf("kept %v, %v; want positions 0, 3 and 4", keep, err)
	}
	if keep, err := refusedOf(nil, 3); err != nil || slices.Contains(keep, true) || len(keep) != 3 {
		t.Errorf("an empty answer: kept %v, %v; want none of 3", keep, err)
	}
	if _, err := refusedOf(refusedAnswer([]uint32{5}), 5); err == nil {
		t.Error("a position past the chunk read without error")
	}
	if _, err := refusedOf([]byte{0xc1}, 5); err == nil {
		t.Error("an unreadable answer read without error")
	}
}
