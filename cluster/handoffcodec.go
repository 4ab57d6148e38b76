package cluster

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
)

// The counters of a hand-off or a replica message are encoded by hand:
// reflection cost as much CPU as the rest of copying a counter to its
// successor. The form is the one the struct tags describe (a map with
// "v", "i" and, when set, "f", each item a map of p, k, t, c, e and, when not zero, s), so
// it reads the same either way.

var (
	_ msgpack.CustomEncoder = (*handoffMsg)(nil)
	_ msgpack.CustomDecoder = (*handoffMsg)(nil)
)

// EncodeMsgpack writes m as the map its struct tags describe. Its receiver
// is a value, so that msgpack.Marshal takes a message as it is.
func (m handoffMsg) EncodeMsgpack(enc *msgpack.Encoder) error {
	fields := 2
	if m.From != "" {
		fields = 3
	}
	if err := enc.EncodeMapLen(fields); err != nil {
		return err
	}
	if m.From != "" {
		if err := enc.EncodeString("f"); err != nil {
			return err
		}
		if err := enc.EncodeString(m.From); err != nil {
			return err
		}
	}
	if err := enc.EncodeString("v"); err != nil {
		return err
	}
	if err := enc.EncodeUint8(m.Version); err != nil {
		return err
	}
	if err := enc.EncodeString("i"); err != nil {
		return err
	}
	if err := enc.EncodeArrayLen(len(m.Items)); err != nil {
		return err
	}
	for i := range m.Items {
		if err := m.Items[i].encode(enc); err != nil {
			return err
		}
	}
	return nil
}

func (it *handoffItem) encode(enc *msgpack.Encoder) error {
	n := 5
	if it.Span != 0 {
		n = 6
	}
	err := enc.EncodeMapLen(n)
	str := func(k, v string) {
		if err == nil {
			err = enc.EncodeString(k)
		}
		if err == nil {
			err = enc.EncodeString(v)
		}
	}
	key := func(k string) {
		if err == nil {
			err = enc.EncodeString(k)
		}
	}
	u32 := func(v uint32) {
		if err == nil {
			err = enc.EncodeUint32(v)
		}
	}
	str("p", it.Policy)
	str("k", it.Key)
	key("t")
	if err == nil {
		err = enc.EncodeInt(it.T)
	}
	key("c")
	if err == nil {
		err = enc.EncodeArrayLen(len(it.Count))
	}
	for _, c := range it.Count {
		u32(c)
	}
	key("e")
	u32(it.Idle)
	if it.Span != 0 {
		key("s")
		u32(it.Span)
	}
	return err
}

// DecodeMsgpack reads the map EncodeMsgpack writes; unknown fields are
// skipped, so that a newer sender's additions do not break it.
func (m *handoffMsg) DecodeMsgpack(dec *msgpack.Decoder) error {
	return decodeMap(dec, func(key string) (err error) {
		switch key {
		case "v":
			m.Version, err = dec.DecodeUint8()
		case "f":
			m.From, err = dec.DecodeString()
		case "i":
			var items int
			if items, err = dec.DecodeArrayLen(); err != nil {
				return err
			}
			if items > handoffChunk {
				return fmt.Errorf("%d counters in one message, at most %d", items, handoffChunk)
			}
			m.Items = make([]handoffItem, max(items, 0))
			for i := range m.Items {
				if err := m.Items[i].decode(dec); err != nil {
					return fmt.Errorf("counter %d: %w", i, err)
				}
			}
		default:
			err = dec.Skip()
		}
		return err
	})
}

func (it *handoffItem) decode(dec *msgpack.Decoder) error {
	return decodeMap(dec, func(key string) (err error) {
		switch key {
		case "p":
			it.Policy, err = dec.DecodeString()
		case "k":
			it.Key, err = dec.DecodeString()
		case "t":
			it.T, err = dec.DecodeInt64()
		case "c":
			var l int
			if l, err = dec.DecodeArrayLen(); err == nil && l != bucket.Slots+1 {
				return fmt.Errorf("%d slot counts, want %d", l, bucket.Slots+1)
			}
			for j := 0; err == nil && j < l; j++ {
				it.Count[j], err = dec.DecodeUint32()
			}
		case "e":
			it.Idle, err = dec.DecodeUint32()
		case "s":
			it.Span, err = dec.DecodeUint32()
		default:
			err = dec.Skip()
		}
		return err
	})
}

// decodeMap reads a msgpack map with string keys, calling field to read
// each key's value.
func decodeMap(dec *msgpack.Decoder, field func(key string) error) error {
	n, err := dec.DecodeMapLen()
	if err != nil {
		return err
	}
	for range max(n, 0) {
		key, err := dec.DecodeString()
		if err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
	}
	return nil
}
