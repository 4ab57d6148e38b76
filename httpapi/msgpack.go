package httpapi

import (
	"bytes"
	"errors"
	"io"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
)

// msgpack request bodies (Content-Type application/msgpack) carry the same
// maps as the JSON ones, with the same field names: {"policy","key","hits"}
// and {"checks":[...]}. Answers stay JSON. Decoding uses reflection: the
// JSON fast path is the one tuned for speed.

func decodeCheckMsgpack(b []byte) (CheckRequest, *inputError) {
	r := CheckRequest{Hits: 1}
	if err := decodeMsgpack(b, &r); err != nil {
		return CheckRequest{}, err
	}
	return r, nil
}

// decodeBatchMsgpack walks the batch map by hand: the library's reflection
// would allocate a slice as long as the array header claims, before reading
// a single element.
func decodeBatchMsgpack(b []byte, items []batchItem, maxBatch int) ([]batchItem, *inputError) {
	if len(b) == 0 {
		return nil, badInput("", "empty body: want a msgpack map")
	}
	rd := bytes.NewReader(b)
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(rd)
	malformed := func(err error) *inputError {
		return badInput("", "malformed msgpack: %s", strings.TrimPrefix(err.Error(), "msgpack: "))
	}
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
			return nil, badInput(name, "unknown field %q", name)
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

// decodeMsgpack decodes exactly one value of b into v, refusing unknown
// fields.
func decodeMsgpack(b []byte, v any) *inputError {
	if len(b) == 0 {
		return badInput("", "empty body: want a msgpack map")
	}
	rd := bytes.NewReader(b)
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(rd)
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return badInput("", "malformed msgpack: unexpected end of body")
		}
		msg := strings.TrimPrefix(err.Error(), "msgpack: ")
		if name, ok := strings.CutPrefix(msg, "unknown field "); ok {
			name = strings.Trim(name, `"`)
			return badInput(name, "unknown field %q", name)
		}
		return badInput("", "malformed msgpack: %s", msg)
	}
	if rd.Len() != 0 {
		return badInput("", "malformed msgpack: data after the map at byte %d", len(b)-rd.Len())
	}
	return nil
}
