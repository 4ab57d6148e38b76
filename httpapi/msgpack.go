package httpapi

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/vibewell/ratelimit/internal/msgpackfit"
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
	if !msgpackfit.Fits(b) {
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
	if !msgpackfit.Fits(b) {
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
