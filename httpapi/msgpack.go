package httpapi

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// msgpack request bodies (Content-Type application/msgpack) carry the same
// maps as the JSON ones, with the same field names: {"policy","key","hits"}
// and {"checks":[...]}. Answers stay JSON. Decoding uses reflection: the
// JSON fast path is the one tuned for speed.

// decodeCheckMsgpack reads a check map by hand, so that each error names
// its field: reflection would read hits of 2^64-1 as -1, match no field
// name strictly, and keep the last of two.
func decodeCheckMsgpack(b []byte) (CheckRequest, *inputError) {
	if len(b) == 0 {
		return CheckRequest{}, badInput("", "empty body: want a msgpack map")
	}
	if !msgpackFits(b) {
		return CheckRequest{}, badInput("", "malformed msgpack: a length beyond the end of the body")
	}
	rd := bytes.NewReader(b)
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(rd)
	fields, err := dec.DecodeMapLen()
	if err != nil {
		return CheckRequest{}, malformedMsgpack(err)
	}
	r := CheckRequest{Hits: 1}
	var seen uint8
	for range max(fields, 0) {
		name, err := dec.DecodeString()
		if err != nil {
			return CheckRequest{}, malformedMsgpack(err)
		}
		var bit uint8
		switch name {
		case "policy":
			bit = 1
			if r.Policy, err = dec.DecodeString(); err != nil {
				return CheckRequest{}, msgpackFieldError(name, "a string", err)
			}
		case "key":
			bit = 2
			if r.Key, err = dec.DecodeString(); err != nil {
				return CheckRequest{}, msgpackFieldError(name, "a string", err)
			}
		case "hits":
			bit = 4
			var ierr *inputError
			if r.Hits, ierr = decodeHits(dec); ierr != nil {
				return CheckRequest{}, ierr
			}
		default:
			return CheckRequest{}, unknownField(name, "policy", "key", "hits")
		}
		if seen&bit != 0 {
			return CheckRequest{}, badInput(name, "field %q given twice", name)
		}
		seen |= bit
	}
	if rd.Len() != 0 {
		return CheckRequest{}, badInput("", "malformed msgpack: data after the map at byte %d", len(b)-rd.Len())
	}
	return r, nil
}

// decodeHits reads the hits of a check: an integer that fits in int64.
func decodeHits(dec *msgpack.Decoder) (int64, *inputError) {
	c, err := dec.PeekCode()
	if err != nil {
		return 0, malformedMsgpack(err)
	}
	switch {
	case c == msgpcode.Uint64:
		u, err := dec.DecodeUint64()
		if err != nil {
			return 0, malformedMsgpack(err)
		}
		if u > math.MaxInt64 {
			return 0, badInput("hits", "hits: %d is out of range", u)
		}
		return int64(u), nil
	case msgpcode.IsFixedNum(c), c >= msgpcode.Uint8 && c <= msgpcode.Uint32, c >= msgpcode.Int8 && c <= msgpcode.Int64:
		n, err := dec.DecodeInt64()
		if err != nil {
			return 0, malformedMsgpack(err)
		}
		return n, nil
	}
	if err := dec.Skip(); err != nil {
		return 0, malformedMsgpack(err)
	}
	got := "another type"
	switch {
	case c == msgpcode.Float || c == msgpcode.Double:
		got = "a float"
	case msgpcode.IsString(c):
		got = "a string"
	case c == msgpcode.Nil:
		got = "nil"
	}
	return 0, badInput("hits", "hits: want an integer, got %s", got)
}

func malformedMsgpack(err error) *inputError {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return badInput("", "malformed msgpack: unexpected end of body")
	}
	return badInput("", "malformed msgpack: %s", strings.TrimPrefix(err.Error(), "msgpack: "))
}

// msgpackFieldError words the error of decoding field as want.
func msgpackFieldError(field, want string, err error) *inputError {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return malformedMsgpack(err)
	}
	return badInput(field, "%s: want %s", field, want)
}

// unknownField refuses the field name, pointing out a known one that it
// matches but for case.
func unknownField(name string, known ...string) *inputError {
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return badInput(name, "unknown field %q: field names are case-sensitive, want %q", name, k)
		}
	}
	return badInput(name, "unknown field %q", name)
}

// decodeBatchMsgpack walks the batch map by hand: the library's reflection
// would allocate a slice as long as the array header claims, before reading
// a single element.
func decodeBatchMsgpack(b []byte, items []batchItem, maxBatch int) ([]batchItem, *inputError) {
	if len(b) == 0 {
		return nil, badInput("", "empty body: want a msgpack map")
	}
	if !msgpackFits(b) {
		return nil, badInput("", "malformed msgpack: a length beyond the end of the body")
	}
	rd := bytes.NewReader(b)
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(rd)
	malformed := malformedMsgpack
	fields, err := dec.DecodeMapLen()
	if err != nil {
		return nil, malformed(err)
	}
	items = items[:0]
	for i := 0; i < fields; i++ {
		name, err := dec.DecodeString()
		if err != nil {
			return nil, malformed(err)
		}
		if name != "checks" {
			return nil, unknownField(name, "checks")
		}
		if i > 0 {
			return nil, badInput(name, "field %q given twice", name)
		}
		n, err := dec.DecodeArrayLen()
		switch {
		case err != nil:
			return nil, malformed(err)
		case n > maxBatch:
			return nil, tooManyChecks(n, maxBatch)
		case n > rd.Len():
			return nil, badInput("checks", "malformed msgpack: %d checks in %d bytes", n, rd.Len())
		}
		items = items[:0]
		for j := 0; j < n; j++ {
			raw, err := dec.DecodeRaw()
			if err != nil {
				return nil, malformed(err)
			}
			r, ierr := decodeCheckMsgpack(raw)
			items = append(items, batchItem{req: r, err: ierr})
		}
	}
	if rd.Len() != 0 {
		return nil, badInput("", "malformed msgpack: data after the map at byte %d", len(b)-rd.Len())
	}
	return items, nil
}

// msgpackFits reports whether every length in the msgpack value at the
// start of b fits in the bytes that follow it: the msgpack library
// allocates, in steps of 1 MiB, whatever a string, binary or extension
// header announces before reading it, so 8 bytes announcing 800 MB cost
// tens of megabytes. A body cut short, or with more elements than bytes
// left, passes, for the decoder to report.
func msgpackFits(b []byte) bool {
	pending := 1 // values still to read
	i := 0
	length := func(k int) (int, bool) { // a big-endian length of k bytes at b[i]
		if i+k > len(b) {
			return 0, false
		}
		n := 0
		for _, c := range b[i : i+k] {
			n = n<<8 | int(c)
		}
		i += k
		return n, true
	}
	for pending > 0 && i < len(b) {
		c := b[i]
		i++
		pending--
		skip, count := 0, 0
		var ok bool
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc1 || c == 0xc2 || c == 0xc3:
		case c <= 0x8f:
			count = 2 * int(c&0x0f)
		case c <= 0x9f:
			count = int(c & 0x0f)
		case c <= 0xbf:
			skip = int(c & 0x1f)
		case c == 0xc4 || c == 0xd9:
			skip, ok = length(1)
		case c == 0xc5 || c == 0xda:
			skip, ok = length(2)
		case c == 0xc6 || c == 0xdb:
			skip, ok = length(4)
		case c == 0xc7, c == 0xc8, c == 0xc9: // ext: length, then a type byte
			if skip, ok = length(1 << (c - 0xc7)); ok {
				skip++
			}
		case c == 0xca || c == 0xce || c == 0xd2:
			skip = 4
		case c == 0xcb || c == 0xcf || c == 0xd3:
			skip = 8
		case c == 0xcc || c == 0xd0:
			skip = 1
		case c == 0xcd || c == 0xd1:
			skip = 2
		case c >= 0xd4 && c <= 0xd8: // fixext: a type byte and 1 to 16 bytes
			skip = 1 + 1<<(c-0xd4)
		case c == 0xdc:
			count, ok = length(2)
		case c == 0xdd:
			count, ok = length(4)
		case c == 0xde:
			if count, ok = length(2); ok {
				count *= 2
			}
		case c == 0xdf:
			if count, ok = length(4); ok {
				count *= 2
			}
		}
		if !ok && (c >= 0xc4 && c <= 0xc9 || c >= 0xd9 && c <= 0xdb || c >= 0xdc) {
			return true // the header itself is cut short
		}
		if skip > len(b)-i {
			return false
		}
		if count > len(b)-i {
			return true // too many elements: the decoders refuse that themselves
		}
		i += skip
		pending += count
	}
	return true
}
