package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/httpapi"
)

func TestClient(t *testing.T) {
	e := newEnv(t, httpapi.Options{MaxBatch: 5})
	c := &httpapi.Client{BaseURL: e.srv.URL + "/", HTTPClient: e.srv.Client()}
	ctx := context.Background()

	for i := 0; i < 3; i++ {
		d, err := c.Check(ctx, "fixed", "c", 1)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != (i < 2) || d.Limit != 2 || d.Remaining != int64(max(0, 1-i)) || d.ResetAfter != 10*time.Second {
			t.Fatalf("check %d: %+v", i, d)
		}
		if i == 2 && d.RetryAfter != 10*time.Second {
			t.Fatalf("denial without RetryAfter: %+v", d)
		}
	}
	if d, err := c.Check(ctx, "fixed", "c", 0); err != nil || d.Allowed {
		t.Fatalf("peek: %+v %v", d, err)
	}

	_, err := c.Check(ctx, "nope", "c", 1)
	var se *httpapi.StatusError
	if !errors.Is(err, httpapi.ErrStatus) || !errors.As(err, &se) || se.StatusCode != 400 || se.Field != "policy" || se.Message != `unknown policy "nope"` {
		t.Fatalf("unknown policy: %v", err)
	}
	if _, err := c.Check(ctx, "auth", "fail", 1); !errors.As(err, &se) || se.StatusCode != 503 {
		t.Fatalf("backend failure: %v", err)
	}

	res, err := c.CheckBatch(ctx, []httpapi.CheckRequest{
		{Policy: "auth", Key: "b", Hits: 2}, {Policy: "auth", Key: "b", Hits: 0}, {Policy: "auth", Key: ""},
	})
	if err != nil || len(res) != 3 {
		t.Fatalf("batch: %+v %v", res, err)
	}
	if !res[0].Allowed || res[0].Remaining != 8 || res[1].Remaining != 8 || res[2].Field != "key" || res[2].Status != 400 {
		t.Fatalf("batch results %+v", res)
	}
	if res, err := c.CheckBatch(ctx, nil); err != nil || len(res) != 0 {
		t.Fatalf("empty batch: %+v %v", res, err)
	}
	if _, err := c.CheckBatch(ctx, make([]httpapi.CheckRequest, 6)); !errors.As(err, &se) || se.Field != "checks" {
		t.Fatalf("batch too large: %v", err)
	}

	ps, err := c.Policies(ctx)
	if err != nil || len(ps) != 5 || ps[0].Name != "api_limit" || ps[4].Overrides["gold"] != 50 {
		t.Fatalf("policies: %+v %v", ps, err)
	}
}

func TestClientErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/check":
			http.Error(w, "bad gateway", http.StatusBadGateway)
		case "/v1/policies":
			_, _ = w.Write([]byte("{not json"))
		default:
			_, _ = w.Write([]byte(`{"results":[]}`))
		}
	}))
	defer srv.Close()
	c := &httpapi.Client{BaseURL: srv.URL, HTTPClient: srv.Client()}
	ctx := context.Background()
	var se *httpapi.StatusError
	if _, err := c.Check(ctx, "auth", "k", 1); !errors.As(err, &se) || se.StatusCode != 502 || se.Message != "bad gateway" {
		t.Errorf("non-JSON error: %v", err)
	}
	if _, err := c.Policies(ctx); err == nil || errors.Is(err, httpapi.ErrStatus) {
		t.Errorf("undecodable answer: %v", err)
	}
	if _, err := c.CheckBatch(ctx, []httpapi.CheckRequest{{Policy: "a", Key: "b", Hits: 1}}); err == nil {
		t.Error("a batch answered with too few results passed")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Check(cctx, "auth", "k", 1); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
}
