package cluster

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/internal/msgpackenc"
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

// The copy and hand-off paths do not go through msgpack's Encoder and
// Decoder at all: appendTo writes the same bytes as EncodeMsgpack into a
// caller's buffer, and decode reads a body in one pass, its strings
// sharing one copy of the body (one allocation per message, not two per
// counter). The stores copy the keys they keep (the memory store encodes
// a key into its own slot or arena), so a counter kept does not keep the
// message alive. EncodeMsgpack and DecodeMsgpack remain for msgpack.Marshal
// and Unmarshal, and the tests hold the two pairs to the same form.

// appendTo appends m in the form EncodeMsgpack writes.
func (m *handoffMsg) appendTo(b []byte) []byte {
	fields := byte(2)
	if m.From != "" {
		fields = 3
	}
	b = append(b, 0x80|fields)
	if m.From != "" {
		b = append(b, 0xa1, 'f')
		b = msgpackenc.AppendString(b, m.From)
	}
	b = append(b, 0xa1, 'v', 0xcc, m.Version, 0xa1, 'i')
	b = msgpackenc.AppendArrayLen(b, len(m.Items))
	for i := range m.Items {
		it := &m.Items[i]
		if it.Span != 0 {
			b = append(b, 0x86)
		} else {
			b = append(b, 0x85)
		}
		b = append(b, 0xa1, 'p')
		b = msgpackenc.AppendString(b, it.Policy)
		b = append(b, 0xa1, 'k')
		b = msgpackenc.AppendString(b, it.Key)
		b = append(b, 0xa1, 't')
		b = msgpackenc.AppendInt(b, it.T)
		b = append(b, 0xa1, 'c')
		b = msgpackenc.AppendArrayLen(b, len(it.Count))
		for _, c := range it.Count {
			b = appendU32(b, c)
		}
		b = append(b, 0xa1, 'e')
		b = appendU32(b, it.Idle)
		if it.Span != 0 {
			b = append(b, 0xa1, 's')
			b = appendU32(b, it.Span)
		}
	}
	return b
}

func appendU32(b []byte, v uint32) []byte {
	return append(b, 0xce, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// errHandoffForm is a body decode cannot read.
var errHandoffForm = errors.New("malformed hand-off message")

// reader reads msgpack values from a body; s is the body as one string,
// which the strings read share.
type reader struct {
	s   string
	pos int
}

func (r *reader) byte1() (byte, error) {
	if r.pos >= len(r.s) {
		return 0, errHandoffForm
	}
	c := r.s[r.pos]
	r.pos++
	return c, nil
}

// big reads an n-byte big-endian number.
func (r *reader) big(n int) (uint64, error) {
	if len(r.s)-r.pos < n {
		return 0, errHandoffForm
	}
	var v uint64
	for _, c := range []byte(r.s[r.pos : r.pos+n]) {
		v = v<<8 | uint64(c)
	}
	r.pos += n
	return v, nil
}

// length reads a string, array or map length of an n-byte header.
func (r *reader) length(n int) (int, error) {
	v, err := r.big(n)
	if err != nil {
		return 0, err
	}
	if v > math.MaxInt32 {
		return 0, errHandoffForm
	}
	return int(v), nil
}

// str reads a string (str or bin, as msgpack's DecodeString does; nil is
// "").
func (r *reader) str() (string, error) {
	c, err := r.byte1()
	if err != nil {
		return "", err
	}
	var l int
	switch {
	case c >= 0xa0 && c <= 0xbf:
		l = int(c & 0x1f)
	case c == 0xc0:
		return "", nil
	case c == 0xd9 || c == 0xc4:
		l, err = r.length(1)
	case c == 0xda || c == 0xc5:
		l, err = r.length(2)
	case c == 0xdb || c == 0xc6:
		l, err = r.length(4)
	default:
		return "", errHandoffForm
	}
	if err != nil || l > len(r.s)-r.pos {
		return "", errHandoffForm
	}
	s := r.s[r.pos : r.pos+l]
	r.pos += l
	return s, nil
}

// int reads any msgpack integer within [lo, hi].
func (r *reader) int(lo, hi int64) (int64, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	var v int64
	switch {
	case c <= 0x7f:
		v = int64(c)
	case c >= 0xe0:
		v = int64(int8(c))
	case c >= 0xcc && c <= 0xcf:
		u, err := r.big(1 << (c - 0xcc))
		if err != nil {
			return 0, err
		}
		if u > math.MaxInt64 {
			return 0, errHandoffForm
		}
		v = int64(u)
	case c >= 0xd0 && c <= 0xd3:
		n := 1 << (c - 0xd0)
		u, err := r.big(n)
		if err != nil {
			return 0, err
		}
		v = int64(u<<(64-8*n)) >> (64 - 8*n) // sign-extended
	default:
		return 0, errHandoffForm
	}
	if v < lo || v > hi {
		return 0, errHandoffForm
	}
	return v, nil
}

// header reads a map (fixmap, map16, map32) or array header.
func (r *reader) header(array bool) (int, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	fix, c16 := byte(0x80), byte(0xde)
	if array {
		fix, c16 = 0x90, 0xdc
	}
	switch {
	case c >= fix && c <= fix+0x0f:
		return int(c & 0x0f), nil
	case c == c16:
		return r.length(2)
	case c == c16+1:
		return r.length(4)
	}
	return 0, errHandoffForm
}

// skip passes over one value of any type, nested at most depth deep.
func (r *reader) skip(depth int) error {
	if depth > 32 {
		return errHandoffForm
	}
	c, err := r.byte1()
	if err != nil {
		return err
	}
	n := 0 // bytes of payload to pass
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
	case c >= 0xa0 && c <= 0xbf:
		n = int(c & 0x1f)
	case c >= 0x80 && c <= 0x9f:
		items := int(c & 0x0f)
		if c <= 0x8f {
			items *= 2
		}
		return r.skipN(items, depth)
	case c == 0xdc || c == 0xde:
		items, err := r.length(2)
		if err != nil {
			return err
		}
		if c == 0xde {
			items *= 2
		}
		return r.skipN(items, depth)
	case c == 0xdd || c == 0xdf:
		items, err := r.length(4)
		if err != nil {
			return err
		}
		if c == 0xdf {
			items *= 2
		}
		return r.skipN(items, depth)
	case c == 0xc4 || c == 0xd9:
		n, err = r.length(1)
	case c == 0xc5 || c == 0xda:
		n, err = r.length(2)
	case c == 0xc6 || c == 0xdb:
		n, err = r.length(4)
	case c == 0xcc || c == 0xd0:
		n = 1
	case c == 0xcd || c == 0xd1:
		n = 2
	case c == 0xce || c == 0xd2 || c == 0xca:
		n = 4
	case c == 0xcf || c == 0xd3 || c == 0xcb:
		n = 8
	case c >= 0xd4 && c <= 0xd8: // fixext 1-16
		n = 1 + 1<<(c-0xd4)
	case c == 0xc7:
		n, err = r.length(1)
		n++
	case c == 0xc8:
		n, err = r.length(2)
		n++
	case c == 0xc9:
		n, err = r.length(4)
		n++
	default:
		return errHandoffForm
	}
	if err != nil || n > len(r.s)-r.pos {
		return errHandoffForm
	}
	r.pos += n
	return nil
}

func (r *reader) skipN(items, depth int) error {
	if items > len(r.s)-r.pos {
		return errHandoffForm // each value takes a byte at least
	}
	for range items {
		if err := r.skip(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

// decode reads body, in the form EncodeMsgpack writes or msgpack's
// reflection over the struct tags (any integer form, a string as str or
// bin, unknown fields skipped), into m, reusing m.Items. It reads a
// subset of what DecodeMsgpack reads (integers out of their field's range
// are refused here, truncated there), with the same result on it.
func (m *handoffMsg) decode(body []byte) error {
	r := reader{s: string(body)}
	if err := m.decodeFrom(&r); err != nil {
		return fmt.Errorf("%w at byte %d", err, r.pos)
	}
	return nil
}

func (m *handoffMsg) decodeFrom(r *reader) error {
	fields, err := r.header(false)
	if err != nil {
		return err
	}
	m.From, m.Version, m.Items = "", 0, m.Items[:0]
	for range fields {
		key, err := r.str()
		if err != nil {
			return err
		}
		switch key {
		case "v":
			v, err := r.int(0, math.MaxUint8)
			if err != nil {
				return err
			}
			m.Version = uint8(v)
		case "f":
			if m.From, err = r.str(); err != nil {
				return err
			}
		case "i":
			c, err := r.byte1()
			if err != nil {
				return err
			}
			if c == 0xc0 {
				m.Items = m.Items[:0] // nil: no counters
				continue
			}
			r.pos--
			items, err := r.header(true)
			if err != nil {
				return err
			}
			if items > handoffChunk {
				return fmt.Errorf("%d counters in one message, at most %d", items, handoffChunk)
			}
			if items > len(r.s)-r.pos {
				return errHandoffForm
			}
			m.Items = slices.Grow(m.Items[:0], items)[:items]
			for i := range m.Items {
				if err := m.Items[i].decodeFrom(r); err != nil {
					return fmt.Errorf("counter %d: %w", i, err)
				}
			}
		default:
			if err := r.skip(0); err != nil {
				return err
			}
		}
	}
	return nil
}

func (it *handoffItem) decodeFrom(r *reader) error {
	*it = handoffItem{}
	fields, err := r.header(false)
	if err != nil {
		return err
	}
	u32 := func() (uint32, error) {
		v, err := r.int(0, math.MaxUint32)
		return uint32(v), err
	}
	for range fields {
		key, err := r.str()
		if err != nil {
			return err
		}
		switch key {
		case "p":
			it.Policy, err = r.str()
		case "k":
			it.Key, err = r.str()
		case "t":
			it.T, err = r.int(math.MinInt64, math.MaxInt64)
		case "c":
			var l int
			if l, err = r.header(true); err == nil && l != bucket.Slots+1 {
				return fmt.Errorf("%d slot counts, want %d", l, bucket.Slots+1)
			}
			for j := 0; err == nil && j < l; j++ {
				it.Count[j], err = u32()
			}
		case "e":
			it.Idle, err = u32()
		case "s":
			it.Span, err = u32()
		default:
			err = r.skip(0)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
