package transport

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/vibewell/ratelimit/internal/msgpackenc"
)

// Frame layout (all integers big-endian):
//
//	offset 0: uint32 length of the rest of the frame (header fields + body)
//	offset 4: uint8  protocol version (Version)
//	offset 5: uint8  frame type (frameCheck...)
//	offset 6: uint32 request id, echoed by the answer
//	offset 10: body, one msgpack value
const (
	headerLen = 10
	lenField  = 4
)

// Frame types.
const (
	frameCheck     byte = 1 // body: [[policy, key, hits], ...]
	frameCheckResp byte = 2 // body: [[status, allowed, limit, remaining, reset_ns, retry_ns], ...]
	frameCall      byte = 3 // body: [method, body]
	frameCallResp  byte = 4 // body: [error message or nil, body or nil]
	frameError     byte = 5 // body: [code, message]: the request failed as a whole
)

// Codes of an error frame.
const (
	codeVersion   = 1 // the frame's version is not ours; the connection closes
	codeBadFrame  = 2 // the body could not be decoded
	codeBadType   = 3 // unknown frame type
	codeTooLarge  = 4 // the answer would exceed the maximum frame size
	codeNotServed = 5 // the transport is closing
)

// Smallest encodings, used to bound array lengths announced by a frame
// before allocating for them.
const (
	minItemLen   = 4 // fixarray(3), fixstr "", fixstr "", fixint
	minResultLen = 7 // fixarray(6) + 6 one-byte values
	maxDepth     = 32
)

// appendHeader appends a frame header whose length field is patched by
// finishFrame.
func appendHeader(b []byte, typ byte, id uint32) []byte {
	return append(b, 0, 0, 0, 0, Version, typ, byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

// finishFrame writes the length of the frame starting at start in b. It
// reports false when the frame exceeds maxFrame bytes.
func finishFrame(b []byte, start, maxFrame int) bool {
	n := len(b) - start
	if n > maxFrame || n-lenField > math.MaxUint32 {
		return false
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n-lenField))
	return true
}

// header is a decoded frame header.
type header struct {
	version byte
	typ     byte
	id      uint32
	bodyLen int
}

// parseHeader decodes the first headerLen bytes of a frame. It reports
// ErrFrameTooLarge when the announced frame exceeds maxFrame, and
// ErrBadFrame when it is shorter than a header.
func parseHeader(b []byte, maxFrame int) (header, error) {
	n := binary.BigEndian.Uint32(b)
	if uint64(n)+lenField > uint64(maxFrame) {
		return header{}, ErrFrameTooLarge
	}
	if n < headerLen-lenField {
		return header{}, ErrBadFrame
	}
	return header{
		version: b[4],
		typ:     b[5],
		id:      binary.BigEndian.Uint32(b[6:]),
		bodyLen: int(n) - (headerLen - lenField),
	}, nil
}

// appendItem appends one CheckItem as [policy, key, hits].
func appendItem(b []byte, it *CheckItem) []byte {
	b = append(b, 0x93)
	b = msgpackenc.AppendString(b, it.Policy)
	b = msgpackenc.AppendString(b, it.Key)
	return msgpackenc.AppendInt(b, it.Hits)
}

// itemSize is an upper bound of the encoded size of it.
func itemSize(it *CheckItem) int {
	return 1 + 5 + len(it.Policy) + 5 + len(it.Key) + 9
}

// appendResult appends one CheckResult as [status, allowed, limit,
// remaining, reset_after_ns, retry_after_ns].
func appendResult(b []byte, r *CheckResult) []byte {
	b = append(b, 0x96)
	b = msgpackenc.AppendUint(b, uint64(r.Status))
	b = msgpackenc.AppendBool(b, r.Allowed)
	b = msgpackenc.AppendInt(b, r.Limit)
	b = msgpackenc.AppendInt(b, r.Remaining)
	b = msgpackenc.AppendInt(b, int64(r.ResetAfter))
	return msgpackenc.AppendInt(b, int64(r.RetryAfter))
}

// appendCheckBatch appends the msgpack encoding of items (an array of
// [policy, key, hits] arrays) to b: the body of a check frame.
func appendCheckBatch(b []byte, items []CheckItem) []byte {
	b = msgpackenc.AppendArrayLen(b, len(items))
	for i := range items {
		b = appendItem(b, &items[i])
	}
	return b
}

// appendResultBatch appends the msgpack encoding of results (an array of
// [status, allowed, limit, remaining, reset_ns, retry_ns] arrays) to b: the
// body of a check answer.
func appendResultBatch(b []byte, results []CheckResult) []byte {
	b = msgpackenc.AppendArrayLen(b, len(results))
	for i := range results {
		b = appendResult(b, &results[i])
	}
	return b
}

// --- msgpack decoding ---

// decoder reads msgpack values from b. The first error sticks: later reads
// return zero values, and ok() reports false.
type decoder struct {
	b   []byte
	off int
	bad bool
}

func (d *decoder) fail() { d.bad, d.off = true, len(d.b) }

// need returns the next n bytes, or nil (and fails) when fewer remain.
func (d *decoder) need(n int) []byte {
	if d.bad || n < 0 || len(d.b)-d.off < n {
		d.fail()
		return nil
	}
	p := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return p
}

func (d *decoder) next() byte {
	p := d.need(1)
	if p == nil {
		return 0
	}
	return p[0]
}

// length reads a big-endian length of size bytes (1, 2 or 4).
func (d *decoder) length(size int) int {
	p := d.need(size)
	switch {
	case p == nil:
		return 0
	case size == 1:
		return int(p[0])
	case size == 2:
		return int(binary.BigEndian.Uint16(p))
	default:
		return int(binary.BigEndian.Uint32(p))
	}
}

// arrayLen reads an array header whose elements take at least minElem bytes
// each, and fails when the rest of the input cannot hold them.
func (d *decoder) arrayLen(minElem int) int {
	c := d.next()
	var n int
	switch {
	case c&0xf0 == 0x90:
		n = int(c & 0x0f)
	case c == 0xdc:
		n = d.length(2)
	case c == 0xdd:
		n = d.length(4)
	default:
		d.fail()
		return 0
	}
	if d.bad || n > (len(d.b)-d.off)/max(minElem, 1) {
		d.fail()
		return 0
	}
	return n
}

// raw reads a str or bin value (or nil, as an empty nil slice) and returns
// its bytes, which alias the input.
func (d *decoder) raw() []byte {
	c := d.next()
	var n int
	switch {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9, c == 0xc4:
		n = d.length(1)
	case c == 0xda, c == 0xc5:
		n = d.length(2)
	case c == 0xdb, c == 0xc6:
		n = d.length(4)
	case c == 0xc0 && !d.bad:
		return nil
	default:
		d.fail()
		return nil
	}
	return d.need(n)
}

func (d *decoder) boolean() bool {
	switch d.next() {
	case 0xc3:
		return true
	case 0xc2:
		return false
	default:
		d.fail()
		return false
	}
}

// int reads any msgpack integer that fits an int64.
func (d *decoder) int() int64 {
	c := d.next()
	switch {
	case d.bad:
		return 0
	case c <= 0x7f:
		return int64(c)
	case c >= 0xe0:
		return int64(int8(c))
	}
	switch c {
	case 0xcc:
		return int64(d.length(1))
	case 0xcd:
		return int64(d.length(2))
	case 0xce:
		return int64(d.length(4))
	case 0xcf:
		p := d.need(8)
		if p == nil {
			return 0
		}
		v := binary.BigEndian.Uint64(p)
		if v > math.MaxInt64 {
			d.fail()
			return 0
		}
		return int64(v)
	case 0xd0:
		return int64(int8(d.next()))
	case 0xd1:
		return int64(int16(d.length(2)))
	case 0xd2:
		return int64(int32(d.length(4)))
	case 0xd3:
		p := d.need(8)
		if p == nil {
			return 0
		}
		return int64(binary.BigEndian.Uint64(p))
	}
	d.fail()
	return 0
}

// skip reads and discards one value of any type.
func (d *decoder) skip(depth int) {
	if depth > maxDepth {
		d.fail()
		return
	}
	c := d.next()
	if d.bad {
		return
	}
	var n, elems int // bytes to skip, then values to skip
	switch {
	case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
	case c&0xf0 == 0x80:
		elems = 2 * int(c&0x0f)
	case c&0xf0 == 0x90:
		elems = int(c & 0x0f)
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xc4, c == 0xd9:
		n = d.length(1)
	case c == 0xc5, c == 0xda:
		n = d.length(2)
	case c == 0xc6, c == 0xdb:
		n = d.length(4)
	case c == 0xc7:
		n = d.length(1) + 1
	case c == 0xc8:
		n = d.length(2) + 1
	case c == 0xc9:
		n = d.length(4) + 1
	case c == 0xca:
		n = 4
	case c == 0xcb:
		n = 8
	case c == 0xcc, c == 0xd0:
		n = 1
	case c == 0xcd, c == 0xd1:
		n = 2
	case c == 0xce, c == 0xd2:
		n = 4
	case c == 0xcf, c == 0xd3:
		n = 8
	case c == 0xd4:
		n = 2
	case c == 0xd5:
		n = 3
	case c == 0xd6:
		n = 5
	case c == 0xd7:
		n = 9
	case c == 0xd8:
		n = 17
	case c == 0xdc:
		elems = d.length(2)
	case c == 0xdd:
		elems = d.length(4)
	case c == 0xde:
		elems = 2 * d.length(2)
	case c == 0xdf:
		elems = 2 * d.length(4)
	default: // 0xc1
		d.fail()
		return
	}
	d.need(n)
	if elems > len(d.b)-d.off { // each value takes at least one byte
		d.fail()
		return
	}
	for i := 0; i < elems && !d.bad; i++ {
		d.skip(depth + 1)
	}
}

// skipRest skips the fields of an array beyond the known ones: a later
// version may append fields, which this one ignores.
func (d *decoder) skipRest(fields, known int) {
	for i := known; i < fields && !d.bad; i++ {
		d.skip(0)
	}
}

// interner turns policy names into strings without allocating for names
// seen before. Policies are few; the table is bounded all the same.
type interner map[string]string

const maxInterned = 256

func (in interner) get(p []byte) string {
	if s, ok := in[string(p)]; ok {
		return s
	}
	s := string(p)
	if len(in) < maxInterned {
		in[s] = s
	}
	return s
}

// decodeCheckBatch decodes a check frame body written by appendCheckBatch
// (or by any msgpack encoder: arrays of [policy, key, hits], extra trailing
// fields ignored) into items, reusing its capacity. Policy names go through
// in when it is not nil. The keys (and, without in, the policies) are
// substrings of one copy of b. It reports ErrBadFrame for malformed input.
func decodeCheckBatch(b []byte, items []CheckItem, in interner) ([]CheckItem, error) {
	d := decoder{b: b}
	n := d.arrayLen(minItemLen)
	items = items[:0]
	if cap(items) < n {
		items = make([]CheckItem, 0, n)
	}
	// Keys are substrings of one copy of the body: one allocation per
	// batch instead of one per key.
	var all string
	if n > 0 {
		all = string(b)
	}
	for i := 0; i < n && !d.bad; i++ {
		fields := d.arrayLen(1)
		if fields < 3 {
			d.fail()
			break
		}
		var it CheckItem
		if p := d.raw(); in != nil {
			it.Policy = in.get(p)
		} else {
			it.Policy = all[d.off-len(p) : d.off]
		}
		key := d.raw()
		it.Key = all[d.off-len(key) : d.off]
		it.Hits = d.int()
		d.skipRest(fields, 3)
		items = append(items, it)
	}
	if d.bad || d.off != len(b) {
		return items[:0], ErrBadFrame
	}
	return items, nil
}

// decodeResultBatch decodes a check answer body written by
// appendResultBatch into results, reusing its capacity. It reports
// ErrBadFrame for malformed input.
func decodeResultBatch(b []byte, results []CheckResult) ([]CheckResult, error) {
	d := decoder{b: b}
	n := d.arrayLen(minResultLen)
	results = results[:0]
	if cap(results) < n {
		results = make([]CheckResult, 0, n)
	}
	for i := 0; i < n && !d.bad; i++ {
		fields := d.arrayLen(1)
		if fields < 6 {
			d.fail()
			break
		}
		var r CheckResult
		st := d.int()
		if st < 0 || st > math.MaxUint8 {
			d.fail()
		}
		r.Status = Status(st)
		r.Allowed = d.boolean()
		r.Limit = d.int()
		r.Remaining = d.int()
		r.ResetAfter = time.Duration(d.int())
		r.RetryAfter = time.Duration(d.int())
		d.skipRest(fields, 6)
		results = append(results, r)
	}
	if d.bad || d.off != len(b) {
		return results[:0], ErrBadFrame
	}
	return results, nil
}

// decodePair decodes a two-field body: [string-or-nil, bytes-or-nil] for
// calls, with the first field as raw bytes. Extra fields are ignored.
func decodePair(b []byte) (first, second []byte, err error) {
	d := decoder{b: b}
	fields := d.arrayLen(1)
	if fields < 2 {
		return nil, nil, ErrBadFrame
	}
	first = d.raw()
	second = d.raw()
	d.skipRest(fields, 2)
	if d.bad || d.off != len(b) {
		return nil, nil, ErrBadFrame
	}
	return first, second, nil
}

// appendErrorBody appends the body of an error frame: [code, message].
func appendErrorBody(b []byte, code int, msg string) []byte {
	b = append(b, 0x92)
	b = msgpackenc.AppendUint(b, uint64(code))
	return msgpackenc.AppendString(b, msg)
}

// decodeErrorBody decodes the body of an error frame.
func decodeErrorBody(b []byte) (code int64, msg string, err error) {
	d := decoder{b: b}
	fields := d.arrayLen(1)
	if fields < 2 {
		return 0, "", ErrBadFrame
	}
	code = d.int()
	msg = string(d.raw())
	d.skipRest(fields, 2)
	if d.bad || d.off != len(b) {
		return 0, "", ErrBadFrame
	}
	return code, msg, nil
}
