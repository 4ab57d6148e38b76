package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/vibewell/ratelimit/httpapi"
)

// FuzzCheckHandler sends any body, as JSON or msgpack, to /v1/check or
// /v1/check/batch: the
// handler must not panic, must answer one of its documented statuses with a
// JSON body of the documented shape, and its headers must agree with it.
// Seeds are in testdata/fuzz/FuzzCheckHandler.
func FuzzCheckHandler(f *testing.F) {
	f.Add([]byte(`{"policy":"auth","key":"k","hits":1}`), false, false)
	f.Add([]byte(`{"checks":[{"policy":"fixed","key":"k"},{"policy":"x"},3]}`), true, false)
	f.Add([]byte("\x83\xa6policy\xa4auth\xa3key\xa1k\xa4hits\x01"), false, true)
	e := newEnv(f, httpapi.Options{MaxBodyBytes: 4096, MaxBatch: 16})
	f.Fuzz(func(t *testing.T, body []byte, batch, mp bool) {
		path := "/v1/check"
		if batch {
			path = "/v1/check/batch"
		}
		req := httptest.NewRequest("POST", path, bytes.NewReader(body))
		if mp {
			req.Header.Set("Content-Type", "application/msgpack")
		}
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		dec := json.NewDecoder(rec.Body)
		dec.DisallowUnknownFields()
		switch rec.Code {
		case 200, 429:
			if batch {
				var r httpapi.BatchResponse
				if err := dec.Decode(&r); err != nil || rec.Code != 200 || len(r.Results) > 16 {
					t.Fatalf("%d %v", rec.Code, err)
				}
				for _, it := range r.Results {
					if (it.Error != "") != (it.Status != 0) || (it.Status != 0 && it.Status != 400 && it.Status != 503) {
						t.Fatalf("item %+v", it)
					}
				}
				return
			}
			var r httpapi.CheckResponse
			if err := dec.Decode(&r); err != nil || r.Allowed != (rec.Code == 200) {
				t.Fatalf("%d %+v %v", rec.Code, r, err)
			}
			h := rec.Header()
			if h.Get("X-RateLimit-Remaining") != strconv.FormatInt(r.Remaining, 10) ||
				h.Get("X-RateLimit-Limit") != strconv.FormatInt(r.Limit, 10) ||
				h.Get("X-RateLimit-Reset") != strconv.FormatInt((r.ResetAfterMS+999)/1000, 10) ||
				(h.Get("Retry-After") != "") != !r.Allowed {
				t.Fatalf("headers %v for %+v", h, r)
			}
		case 400, 413, 503:
			var r httpapi.ErrorResponse
			if err := dec.Decode(&r); err != nil || r.Error == "" || batch && rec.Code == 503 {
				t.Fatalf("%d %+v %v", rec.Code, r, err)
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if dec.More() {
			t.Fatal("more than one JSON value in the answer")
		}
	})
}
