package transport

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// wireItem and wireResult are the wire structs as the msgpack library sees
// them by reflection: the reference the hand-written codec must agree with.
type wireItem struct {
	_msgpack struct{} `msgpack:",as_array"`
	Policy   string
	Key      string
	Hits     int64
}

type wireResult struct {
	_msgpack   struct{} `msgpack:",as_array"`
	Status     uint8
	Allowed    bool
	Limit      int64
	Remaining  int64
	ResetAfter int64
	RetryAfter int64
}

// wireItemV2 is an item of a later version with one more field.
type wireItemV2 struct {
	_msgpack struct{} `msgpack:",as_array"`
	Policy   string
	Key      string
	Hits     int64
	Extra    map[string][]int
}

var ints = []int64{0, 1, 31, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1,
	math.MaxInt64, -1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64}

func sampleItems() []CheckItem {
	var items []CheckItem
	for i, n := range []int{0, 1, 31, 32, 255, 256, 65535, 65536} {
		items = append(items, CheckItem{Policy: strings.Repeat("p", i), Key: strings.Repeat("k", n), Hits: ints[i%len(ints)]})
	}
	for _, h := range ints {
		items = append(items, CheckItem{Policy: "auth", Key: "ip:1.2.3.4", Hits: h})
	}
	return items
}

func sampleResults() []CheckResult {
	var rs []CheckResult
	for i, v := range ints {
		rs = append(rs, CheckResult{
			Status: Status(i % 256), Allowed: i%2 == 0, Limit: v, Remaining: -v / 2,
			ResetAfter: time.Duration(v), RetryAfter: time.Duration(ints[(i+3)%len(ints)]),
		})
	}
	return rs
}

func TestCodecRoundTrip(t *testing.T) {
	items := sampleItems()
	got, err := decodeCheckBatch(appendCheckBatch(nil, items), nil, make(interner))
	if err != nil || !reflect.DeepEqual(got, items) {
		t.Fatalf("items round trip: %v", err)
	}
	results := sampleResults()
	gotR, err := decodeResultBatch(appendResultBatch(nil, results), nil)
	if err != nil || !reflect.DeepEqual(gotR, results) {
		t.Fatalf("results round trip: %v\n got %+v\nwant %+v", err, gotR, results)
	}
	// Large batches use the 16- and 32-bit array headers.
	for _, n := range []int{15, 16, 65535, 65536} {
		big := make([]CheckItem, n)
		got, err := decodeCheckBatch(appendCheckBatch(nil, big), nil, nil)
		if err != nil || len(got) != n {
			t.Fatalf("batch of %d: %d items, %v", n, len(got), err)
		}
	}
}

// The hand-written codec and the msgpack library read each other's
// encodings.
func TestCodecAgreesWithMsgpack(t *testing.T) {
	items := sampleItems()
	var lib []wireItem
	if err := msgpack.Unmarshal(appendCheckBatch(nil, items), &lib); err != nil {
		t.Fatal(err)
	}
	if len(lib) != len(items) {
		t.Fatalf("library read %d items, want %d", len(lib), len(items))
	}
	for i, w := range lib {
		if w.Policy != items[i].Policy || w.Key != items[i].Key || w.Hits != items[i].Hits {
			t.Fatalf("library read item %d as %+v", i, w)
		}
	}
	enc, err := msgpack.Marshal(lib)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeCheckBatch(enc, nil, nil)
	if err != nil || !reflect.DeepEqual(got, items) {
		t.Fatalf("decoding the library's items: %v", err)
	}

	results := sampleResults()
	var libR []wireResult
	if err := msgpack.Unmarshal(appendResultBatch(nil, results), &libR); err != nil {
		t.Fatal(err)
	}
	for i, w := range libR {
		r := results[i]
		if w.Status != uint8(r.Status) || w.Allowed != r.Allowed || w.Limit != r.Limit || w.Remaining != r.Remaining ||
			w.ResetAfter != int64(r.ResetAfter) || w.RetryAfter != int64(r.RetryAfter) {
			t.Fatalf("library read result %d as %+v, want %+v", i, w, r)
		}
	}
	enc, err = msgpack.Marshal(libR)
	if err != nil {
		t.Fatal(err)
	}
	gotR, err := decodeResultBatch(enc, nil)
	if err != nil || !reflect.DeepEqual(gotR, results) {
		t.Fatalf("decoding the library's results: %v", err)
	}

	// A later version's trailing fields are skipped.
	v2 := []wireItemV2{{Policy: "p", Key: "k", Hits: 3, Extra: map[string][]int{"a": {1, 2, 3}}}, {Policy: "q", Key: "j", Hits: -1}}
	enc, err = msgpack.Marshal(v2)
	if err != nil {
		t.Fatal(err)
	}
	got, err = decodeCheckBatch(enc, nil, nil)
	want := []CheckItem{{Policy: "p", Key: "k", Hits: 3}, {Policy: "q", Key: "j", Hits: -1}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("items with extra fields: %+v, %v", got, err)
	}
}

// Every truncation and every single-byte corruption of a valid batch is
// rejected or decoded, never a panic; truncations are always rejected.
func TestCodecRejectsMalformed(t *testing.T) {
	enc := appendCheckBatch(nil, []CheckItem{{Policy: "auth", Key: "ip:1.2.3.4", Hits: 300}, {Policy: "x", Key: "y", Hits: -70000}})
	for i := range enc {
		if _, err := decodeCheckBatch(enc[:i], nil, nil); !errors.Is(err, ErrBadFrame) {
			t.Fatalf("truncated at %d: %v", i, err)
		}
	}
	if _, err := decodeCheckBatch(append(enc, 0), nil, nil); !errors.Is(err, ErrBadFrame) {
		t.Fatal("trailing byte accepted")
	}
	for i := range enc {
		for _, b := range []byte{0x00, 0x7f, 0xc1, 0xdd, 0xdf, 0xff} {
			c := append([]byte(nil), enc...)
			c[i] = b
			_, _ = decodeCheckBatch(c, nil, nil)
			_, _ = decodeResultBatch(c, nil)
		}
	}
	for name, b := range map[string][]byte{
		"item with 2 fields":   {0x91, 0x92, 0xa0, 0xa0},
		"uint64 over int64":    {0x91, 0x93, 0xa0, 0xa0, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"array32 bomb":         {0xdd, 0x7f, 0xff, 0xff, 0xff, 0x93},
		"str32 past the end":   {0x91, 0x93, 0xdb, 0x7f, 0xff, 0xff, 0xff},
		"hits as a string":     {0x91, 0x93, 0xa0, 0xa0, 0xa0},
		"deep nesting in skip": append([]byte{0x91, 0x94, 0xa0, 0xa0, 0x00}, []byte(strings.Repeat("\x91", 100))...),
	} {
		if _, err := decodeCheckBatch(b, nil, nil); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v, want ErrBadFrame", name, err)
		}
	}
	if _, err := decodeResultBatch([]byte{0x91, 0x96, 0xcd, 0x01, 0x00, 0xc2, 0, 0, 0, 0}, nil); !errors.Is(err, ErrBadFrame) {
		t.Error("status 256 accepted")
	}
}

func TestParseHeader(t *testing.T) {
	b := appendHeader(nil, frameCheck, 0xdeadbeef)
	b = append(b, 0x90)
	if !finishFrame(b, 0, 64) {
		t.Fatal("finishFrame refused a small frame")
	}
	h, err := parseHeader(b, 64)
	if err != nil || h != (header{version: Version, typ: frameCheck, id: 0xdeadbeef, bodyLen: 1}) {
		t.Fatalf("parseHeader = %+v, %v", h, err)
	}
	if _, err := parseHeader(b, len(b)-1); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("frame over the limit: %v", err)
	}
	if finishFrame(b, 0, len(b)-1) {
		t.Fatal("finishFrame accepted a frame over the limit")
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{StatusOK: "ok", StatusUnknownPolicy: "unknown_policy", StatusBadRequest: "bad_request",
		StatusUnavailable: "unavailable", StatusNotOwner: "not_owner", 200: "status(200)"} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", s, got, want)
		}
	}
}
