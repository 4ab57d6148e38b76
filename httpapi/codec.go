package httpapi

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/vibewell/ratelimit/bucket"
)

// inputError is a request the caller got wrong: it becomes a 4xx answer
// with an ErrorResponse body.
type inputError struct {
	status int
	msg    string
	field  string
}

func (e *inputError) Error() string { return e.msg }

func badInput(field, format string, args ...any) *inputError {
	return &inputError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...), field: field}
}

// Request bodies are decoded in two tiers. The fast path reads the plain
// form that clients send (ASCII strings without escapes, integer hits, the
// known fields once each) without reflection; anything else goes to
// encoding/json, which accepts every valid document and words the errors.
// The fast path never accepts a document that encoding/json rejects, and
// decodes what it accepts to the same values (FuzzDecodeCheck holds this).

// decodeCheck decodes a POST /v1/check body. An omitted hits is 1.
func decodeCheck(b []byte) (CheckRequest, *inputError) {
	s := scanner{b: b}
	if r, ok := s.check(); ok && s.end() {
		return r, nil
	}
	return decodeCheckSlow(b)
}

func decodeCheckSlow(b []byte) (CheckRequest, *inputError) {
	if ierr := checkFields(b, "policy", "key", "hits"); ierr != nil {
		return CheckRequest{}, ierr
	}
	r := CheckRequest{Hits: 1}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return CheckRequest{}, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return CheckRequest{}, badInput("", "malformed JSON: data after the object at byte %d", dec.InputOffset())
	}
	return r, nil
}

// batchItem is one check of a batch as decoded: a request or the error
// that keeps it from being decided.
type batchItem struct {
	req CheckRequest
	dec bucket.Decision
	err *inputError
}

// decodeBatch decodes a POST /v1/check/batch body. A malformed item makes an
// item error, not a batch error.
func decodeBatch(b []byte, items []batchItem, maxBatch int) ([]batchItem, *inputError) {
	s := scanner{b: b}
	if items, ok := s.batch(items, maxBatch); ok && s.end() {
		return items, nil
	}
	if ierr := checkFields(b, "checks"); ierr != nil {
		return nil, ierr
	}
	var body struct {
		Checks []json.RawMessage `json:"checks"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badInput("", "malformed JSON: data after the object at byte %d", dec.InputOffset())
	}
	if len(body.Checks) > maxBatch {
		return nil, tooManyChecks(len(body.Checks), maxBatch)
	}
	items = items[:0]
	for _, raw := range body.Checks {
		r, err := decodeCheckSlow(raw)
		items = append(items, batchItem{req: r, err: err})
	}
	return items, nil
}

func tooManyChecks(n, maxBatch int) *inputError {
	return badInput("checks", "batch of %d checks is larger than %d", n, maxBatch)
}

// jsonError words an encoding/json error for the caller.
func jsonError(err error) *inputError {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return badInput("", "empty body: want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badInput("", "malformed JSON: unexpected end of body")
	case errors.As(err, &syn):
		return badInput("", "malformed JSON at byte %d: %s", syn.Offset, strings.TrimPrefix(syn.Error(), "json: "))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badInput("", "want a JSON object, got %s", typ.Value)
		}
		return badInput(typ.Field, "%s: want %s, got %s", typ.Field, jsonType(typ.Type), typ.Value)
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, `json: unknown field "`); ok {
		name = strings.TrimSuffix(name, `"`)
		return badInput(name, "unknown field %q", name)
	}
	return badInput("", "malformed JSON: %s", strings.TrimPrefix(msg, "json: "))
}

// jsonType names the JSON type that decodes to t, for an error message.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return "a string"
	}
	switch t.Kind().String() {
	case "int64", "int":
		return "an integer"
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	case "bool":
		return "true or false"
	}
	return t.Kind().String()
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// scanner reads the plain form of request bodies; every method returns
// false on anything outside it.
type scanner struct {
	b []byte
	i int
	// policy is the last policy name read: the checks of a batch mostly
	// share one, and reusing it saves an allocation per check.
	policy string
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) consume(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// str reads a string of printable ASCII with no escapes.
func (s *scanner) str() ([]byte, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], true
		case c < 0x20 || c == '\\' || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// int reads an integer of at most 18 digits, with no fraction or exponent.
func (s *scanner) int() (int64, bool) {
	s.ws()
	j, neg := s.i, false
	if j < len(s.b) && s.b[j] == '-' {
		neg = true
		j++
	}
	start := j
	var n int64
	for ; j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9'; j++ {
		if j-start == 18 {
			return 0, false
		}
		n = n*10 + int64(s.b[j]-'0')
	}
	if j == start || (s.b[start] == '0' && j-start > 1) {
		return 0, false
	}
	if j < len(s.b) && (s.b[j] == '.' || s.b[j] == 'e' || s.b[j] == 'E') {
		return 0, false
	}
	s.i = j
	if neg {
		n = -n
	}
	return n, true
}

// check reads {"policy":..,"key":..,"hits":..}, each field at most once,
// in any order; hits defaults to 1.
func (s *scanner) check() (CheckRequest, bool) {
	r := CheckRequest{Hits: 1}
	if !s.consume('{') {
		return r, false
	}
	if s.consume('}') {
		return r, true
	}
	var seen uint8
	for {
		k, ok := s.str()
		if !ok || !s.consume(':') {
			return r, false
		}
		var bit uint8
		switch string(k) {
		case "policy":
			bit = 1
			var v []byte
			if v, ok = s.str(); ok {
				if string(v) != s.policy {
					s.policy = string(v)
				}
				r.Policy = s.policy
			}
		case "key":
			bit = 2
			var v []byte
			if v, ok = s.str(); ok {
				r.Key = string(v)
			}
		case "hits":
			bit = 4
			r.Hits, ok = s.int()
		default:
			return r, false
		}
		if !ok || seen&bit != 0 {
			return r, false
		}
		seen |= bit
		if s.consume(',') {
			continue
		}
		return r, s.consume('}')
	}
}

// batch reads {"checks":[check,...]} of at most maxBatch checks.
func (s *scanner) batch(items []batchItem, maxBatch int) ([]batchItem, bool) {
	if !s.consume('{') {
		return nil, false
	}
	if k, ok := s.str(); !ok || string(k) != "checks" || !s.consume(':') || !s.consume('[') {
		return nil, false
	}
	items = items[:0]
	if !s.consume(']') {
		for {
			r, ok := s.check()
			if !ok || len(items) == maxBatch {
				return nil, false
			}
			items = append(items, batchItem{req: r})
			if s.consume(',') {
				continue
			}
			if !s.consume(']') {
				return nil, false
			}
			break
		}
	}
	return items, s.consume('}')
}

// Responses are appended to pooled buffers by hand: their shapes are fixed
// and small, and encoding/json would cost reflection on every check.

// appendDecision appends the CheckResponse JSON of d, without the closing
// brace, so that a caller can add fields.
func appendDecision(b []byte, policy string, d bucket.Decision) []byte {
	b = append(b, `{"allowed":`...)
	b = strconv.AppendBool(b, d.Allowed)
	b = append(b, `,"policy":`...)
	b = appendString(b, policy)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, d.Limit, 10)
	b = append(b, `,"remaining":`...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, `,"reset_after_ms":`...)
	b = strconv.AppendInt(b, ceilMS(d.ResetAfter), 10)
	b = append(b, `,"retry_after_ms":`...)
	b = strconv.AppendInt(b, ceilMS(d.RetryAfter), 10)
	return b
}

// appendError appends an ErrorResponse (with a status, for batch items).
func appendError(b []byte, e *inputError, withStatus bool) []byte {
	b = append(b, `{"error":`...)
	b = appendString(b, e.msg)
	if e.field != "" {
		b = append(b, `,"field":`...)
		b = appendString(b, e.field)
	}
	if withStatus {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(e.status), 10)
	}
	return append(b, '}')
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// buffers are the per-request scratch space, pooled.
type buffers struct {
	in    []byte
	out   []byte
	items []batchItem
}

// maxPooled bounds what a pooled buffer may keep, so one large batch does
// not pin memory for good.
const maxPooled = 256 << 10

var bufPool = sync.Pool{New: func() any { return &buffers{in: make([]byte, 0, 512), out: make([]byte, 0, 512)} }}

func getBuffers() *buffers { return bufPool.Get().(*buffers) }

func putBuffers(b *buffers) {
	if cap(b.in) > maxPooled || cap(b.out) > maxPooled || cap(b.items) > 1024 {
		return
	}
	b.in = b.in[:0]
	b.out = b.out[:0]
	clear(b.items[:cap(b.items)]) // a failed fast parse may have left checks past len
	b.items = b.items[:0]
	bufPool.Put(b)
}
