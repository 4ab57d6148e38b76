package httpapi

import (
	"encoding/json"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
)

// FuzzDecodeCheck holds the promise of the fast decoder: whatever it
// accepts, encoding/json accepts too, with the same values.
func FuzzDecodeCheck(f *testing.F) {
	for _, s := range []string{
		`{"policy":"auth","key":"ip:1.2.3.4","hits":1}`,
		`{"policy":"auth","key":"k"}`,
		` { "hits" : -0 , "key":"k","policy":"p" } `,
		`{"policy":"auth","key":"k","hits":007}`,
		`{"policy":"auth","key":"k","hits":1e3}`,
		`{"policy":"auth","policy":"x","key":"k"}`,
		`{"policy":"auth","key":"k",}`,
		`{}`, `{"checks":[{}]}`, `[]`, `{"Policy":"a"}`, `{"key":"\u00e9"}`,
		`{"policy":"auth","key":"k","hits":999999999999999999}`,
		`{"policy":"auth","key":"k","hits":9223372036854775808}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := checkFields(b, "policy", "key", "hits") == nil, fieldsOK(b, "policy", "key", "hits"); json.Valid(b) && got != want {
			t.Fatalf("%q: checkFields passes %v, want %v", b, got, want)
		}
		s := scanner{b: b}
		fast, ok := s.check()
		if ok && s.end() {
			slow, err := decodeCheckSlow(b)
			if err != nil || slow != fast {
				t.Fatalf("%q: fast %+v, slow %+v %v", b, fast, slow, err)
			}
		}
		s = scanner{b: b}
		if items, ok := s.batch(nil, 1000); ok && s.end() {
			var body struct{ Checks []json.RawMessage }
			if err := json.Unmarshal(b, &body); err != nil || len(body.Checks) != len(items) {
				t.Fatalf("%q: fast batch of %d, slow %d %v", b, len(items), len(body.Checks), err)
			}
			for i, raw := range body.Checks {
				slow, err := decodeCheckSlow(raw)
				if err != nil || slow != items[i].req {
					t.Fatalf("%q item %d: fast %+v, slow %+v %v", b, i, items[i].req, slow, err)
				}
			}
		}
	})
}

func TestDecodeCheckPaths(t *testing.T) {
	for _, c := range []struct {
		body string
		fast bool
		want CheckRequest
	}{
		{`{"policy":"auth","key":"k","hits":5}`, true, CheckRequest{"auth", "k", 5}},
		{` {"key":"k" , "policy":"auth"}` + "\n", true, CheckRequest{"auth", "k", 1}},
		{`{"policy":"auth","key":"k","hits":-0}`, true, CheckRequest{"auth", "k", 0}},
		{`{"policy":"auth","key":"\u006b"}`, false, CheckRequest{"auth", "k", 1}},
		{`{"policy":"auth","key":"k","hits":1e2}`, false, CheckRequest{}}, // an error
		{`{"policy":"auth","key":"k","hits":null}`, false, CheckRequest{"auth", "k", 1}},
		{`{"policy":"a","policy":"auth","key":"k"}`, false, CheckRequest{}}, // refused: which one is meant?
		{`{"Policy":"auth","key":"k"}`, false, CheckRequest{}},              // refused: names are exact
	} {
		s := scanner{b: []byte(c.body)}
		r, ok := s.check()
		if fast := ok && s.end(); fast != c.fast {
			t.Errorf("%s: fast path %v, want %v", c.body, fast, c.fast)
		}
		if got, _ := decodeCheck([]byte(c.body)); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.body, got, c.want)
		}
		_ = r
	}
}

func TestAppendDecisionIsValidJSON(t *testing.T) {
	d := bucket.Decision{Limit: 3, Remaining: 1, ResetAfter: 1500*time.Microsecond + 1, RetryAfter: time.Nanosecond}
	for _, policy := range []string{"auth", "we\"ird\\\n\u00e9\x7f"} {
		b := append(appendDecision(nil, policy, d), '}')
		var r CheckResponse
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		want := CheckResponse{Policy: policy, Limit: 3, Remaining: 1, ResetAfterMS: 2, RetryAfterMS: 1}
		if r != want {
			t.Errorf("%+v, want %+v", r, want)
		}
	}
	e := &inputError{status: 400, msg: "bad \"x\"\t", field: "k\x00"}
	var r CheckResult
	if err := json.Unmarshal(appendError(nil, e, true), &r); err != nil || r.Error != e.msg || r.Field != e.field || r.Status != 400 {
		t.Errorf("%+v %v", r, err)
	}
	if !strings.HasPrefix(string(appendSFString(nil, "a\"b\\c\x01")), `"a\"b\\c?"`) {
		t.Errorf("sf-string %s", appendSFString(nil, "a\"b\\c\x01"))
	}
}

// FuzzDecodePolicy feeds any body to the admin API's policy decoder: no
// panic; a decoded policy that validates encodes and decodes to itself;
// an error is a 400 that names a field or the body.
func FuzzDecodePolicy(f *testing.F) {
	for _, s := range []string{
		`{"name":"auth","limit":10,"window_ms":900000}`,
		`{"algorithm":"gcra","limit":5,"window_ms":1000,"burst":9223372036854775807}`,
		`{"algorithm":1,"limit":5,"window_ms":1000}`,
		`{"limit":5,"Limit":6,"window_ms":1000}`,
		`{"limit":5,"limit":6,"window_ms":1000}`,
		`{"limit":5,"window_ms":1000,"overrides":{"k":1,"k":2}}`,
		` null `, `[1]`, `{"limit":5,"window_ms":1000} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ierr := decodePolicy(b)
		if ierr != nil {
			if ierr.status != 400 || ierr.msg == "" {
				t.Fatalf("%q: %+v", b, ierr)
			}
			return
		}
		if p.Validate() != nil {
			return
		}
		enc, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		back, ierr := decodePolicy(enc)
		if ierr != nil || !reflect.DeepEqual(back, p) {
			t.Fatalf("%s: round trip %+v, want %+v (%v)", enc, back, p, ierr)
		}
	})
}

// FuzzDecodeCheckMsgpack feeds any body to the msgpack check decoder: no
// panic; an error is a 400; a decoded check re-encodes (by reflection,
// as clients do) to one that decodes the same.
func FuzzDecodeCheckMsgpack(f *testing.F) {
	f.Add([]byte("\x83\xa6policy\xa4auth\xa3key\xa1k\xa4hits\x01"))
	f.Add([]byte("\x83\xa6policy\xa4auth\xa3key\xa1k\xa4hits\xcf\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Add([]byte("\x83\xa6policy\xa4auth\xa3key\xa1k\xa3key\xa1j"))
	f.Add([]byte("\x81\xa6checks\x91\x82\xa6policy\xa4auth\xa3key\xa1k"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, ierr := decodeBatchMsgpack(b, nil, 16); ierr != nil && ierr.status != 400 {
			t.Fatalf("batch %q: %+v", b, ierr)
		}
		r, ierr := decodeCheckMsgpack(b)
		if ierr != nil {
			if ierr.status != 400 {
				t.Fatalf("%q: %+v", b, ierr)
			}
			return
		}
		enc, err := msgpack.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if back, ierr := decodeCheckMsgpack(enc); ierr != nil || back != r {
			t.Fatalf("round trip %+v, want %+v (%v)", back, r, ierr)
		}
	})
}

// fieldsOK is what checkFields decides, by encoding/json's tokens: a
// valid JSON value that is not an object, or an object naming only known
// fields, once each.
func fieldsOK(b []byte, known ...string) bool {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return true
	}
	seen := map[string]bool{}
	for dec.More() {
		t, _ := dec.Token()
		name, _ := t.(string)
		if seen[name] || indexOf(known, name) < 0 {
			return false
		}
		seen[name] = true
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return true
		}
	}
	return true
}

// A msgpack length beyond the end of the body is refused before the
// library allocates what it announces (8 bytes announcing 800 MB cost
// 42 MB before).
func TestMsgpackLengthBeyondBody(t *testing.T) {
	for _, b := range []string{"\x83\xc6\x30\x30\x30\x30\xc6\x86", "\x81\xa6checks\x91\x81\xa6policy\xdb\x7f\xff\xff\xff"} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, ierr := decodeCheckMsgpack([]byte(b))
		_, berr := decodeBatchMsgpack([]byte(b), nil, 16)
		runtime.ReadMemStats(&after)
		if ierr == nil || ierr.status != 400 || berr == nil {
			t.Errorf("%q: %v, %v", b, ierr, berr)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<16 {
			t.Errorf("%q: allocated %d bytes", b, grew)
		}
	}
}
