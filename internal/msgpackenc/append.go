// Package msgpackenc appends msgpack values to a byte slice, without
// reflection, in the shortest form (the one the msgpack library's
// EncodeInt, EncodeUint, EncodeString and EncodeBytes write): the peer
// transport's frames and the cluster's hand-off and copy messages are
// encoded with it.
package msgpackenc

import (
	"encoding/binary"
	"math"
)

// AppendArrayLen appends the header of an array of n elements.
func AppendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xdc, byte(n>>8), byte(n))
	default:
		return append(b, 0xdd, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// AppendString appends s as a msgpack string.
func AppendString(b []byte, s string) []byte {
	if n := len(s); n < 32 {
		b = append(b, 0xa0|byte(n))
	} else {
		b = appendSized(b, n, 0xd9, 0xda, 0xdb)
	}
	return append(b, s...)
}

// AppendBytes appends p as msgpack binary, or nil for a nil p.
func AppendBytes(b []byte, p []byte) []byte {
	if p == nil {
		return append(b, 0xc0)
	}
	return append(appendSized(b, len(p), 0xc4, 0xc5, 0xc6), p...)
}

// appendSized appends the header of a string or binary of n bytes: code8,
// code16 or code32 and n in 1, 2 or 4 bytes, the fewest that hold it.
func appendSized(b []byte, n int, code8, code16, code32 byte) []byte {
	switch {
	case n <= math.MaxUint8:
		return append(b, code8, byte(n))
	case n <= math.MaxUint16:
		return append(b, code16, byte(n>>8), byte(n))
	}
	return append(b, code32, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// AppendBool appends v.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// AppendUint appends v in the fewest bytes.
func AppendUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return append(b, 0xcd, byte(v>>8), byte(v))
	case v <= math.MaxUint32:
		return append(b, 0xce, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
	}
}

// AppendInt appends v in the fewest bytes, as an unsigned integer when it
// is not negative.
func AppendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0:
		return AppendUint(b, uint64(v))
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return append(b, 0xd1, byte(v>>8), byte(v))
	case v >= math.MinInt32:
		return append(b, 0xd2, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
	}
}
