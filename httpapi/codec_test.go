package httpapi

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

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
