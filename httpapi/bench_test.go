package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/httpapi"
)

// benchKeys is the number of distinct keys a benchmark cycles through.
const benchKeys = 1024

func checkBody(i int) []byte {
	return fmt.Appendf(nil, `{"policy":"bench","key":"ip:10.0.%d.%d","hits":1}`, i/256%256, i%256)
}

func batchBody(n, offset int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"checks":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(checkBody(offset + i))
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// BenchmarkCheckHandler measures the handler in-process (no network),
// against node.Allow alone as the baseline of the same run.
func BenchmarkCheckHandler(b *testing.B) {
	e := newEnv(b, httpapi.Options{})
	bodies := make([][]byte, benchKeys)
	for i := range bodies {
		bodies[i] = checkBody(i)
	}
	b.Run("baseline=node.Allow", func(b *testing.B) {
		ctx := context.Background()
		keys := make([]string, benchKeys)
		for i := range keys {
			keys[i] = fmt.Sprintf("ip:10.0.%d.%d", i/256%256, i%256)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := e.node.Allow(ctx, "bench", keys[i%benchKeys], 1); err != nil {
				b.Fatal(err)
			}
		}
	})
	serve := func(b *testing.B, method, path string, body func(i int) []byte, want int) {
		req := httptest.NewRequest(method, path, nil)
		r := bytes.NewReader(nil)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			bb := body(i)
			r.Reset(bb)
			req.Body, req.ContentLength = io.NopCloser(r), int64(len(bb))
			rec := httptest.NewRecorder()
			e.handler.ServeHTTP(rec, req)
			if rec.Code != want {
				b.Fatalf("%d %s", rec.Code, rec.Body)
			}
		}
	}
	b.Run("check", func(b *testing.B) {
		serve(b, "POST", "/v1/check", func(i int) []byte { return bodies[i%benchKeys] }, 200)
	})
	b.Run("check/escaped", func(b *testing.B) { // the encoding/json path
		esc := []byte(`{"policy":"bench","key":"ip:10.0.0.\u0031","hits":1}`)
		serve(b, "POST", "/v1/check", func(int) []byte { return esc }, 200)
	})
	b.Run("auth", func(b *testing.B) {
		req := httptest.NewRequest("GET", "/v1/auth?policy=bench", nil)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			req.Header.Set("X-RateLimit-Key", fmt.Sprint(i%benchKeys))
			rec := httptest.NewRecorder()
			e.handler.ServeHTTP(rec, req)
			if rec.Code != 204 {
				b.Fatal(rec.Code)
			}
		}
	})
	batch := batchBody(100, 0)
	b.Run("batch100", func(b *testing.B) {
		serve(b, "POST", "/v1/check/batch", func(int) []byte { return batch }, 200)
		b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "decisions/s")
	})
}

// BenchmarkCheckHTTP measures checks over loopback HTTP/1.1 with 1 and 64
// concurrent clients (each with its own keep-alive connection), for single
// checks and batches of 100. Client and server share the machine's cores.
func BenchmarkCheckHTTP(b *testing.B) {
	e := newEnv(b, httpapi.Options{})
	// The baseline is net/http's own floor: a handler that reads the body
	// and writes a fixed answer of the same size, on the same machine.
	fixed := []byte(`{"allowed":true,"policy":"bench","limit":2147483648,"remaining":2147480000,"reset_after_ms":3600000,"retry_after_ms":0}` + "\n")
	floor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(fixed)
	}))
	defer floor.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, c := range []struct {
		name  string
		path  string
		size  int // checks per request
		want  int
		typed bool // through httpapi.Client rather than prebuilt bodies
		base  bool // to the baseline server
	}{
		{name: "baseline=nethttp", path: "/v1/check", size: 1, want: 200, base: true},
		{name: "check", path: "/v1/check", size: 1, want: 200},
		{name: "check/client", path: "/v1/check", size: 1, want: 200, typed: true},
		{name: "batch100", path: "/v1/check/batch", size: 100, want: 200},
	} {
		for _, clients := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/clients=%d", c.name, clients), func(b *testing.B) {
				bodies := make([][]byte, benchKeys/c.size)
				for i := range bodies {
					if c.size == 1 {
						bodies[i] = checkBody(i)
					} else {
						bodies[i] = batchBody(c.size, i*c.size)
					}
				}
				url := e.srv.URL
				if c.base {
					url = floor.URL
				}
				api := &httpapi.Client{BaseURL: url, HTTPClient: hc}
				var (
					wg   sync.WaitGroup
					mu   sync.Mutex
					ferr error
					next = make(chan int, clients)
				)
				b.ResetTimer()
				for w := 0; w < clients; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range next {
							if err := oneRequest(hc, api, url+c.path, bodies[i%len(bodies)], c.want, c.typed, i); err != nil {
								mu.Lock()
								ferr = err
								mu.Unlock()
							}
						}
					}()
				}
				for i := 0; i < b.N; i++ {
					next <- i
				}
				close(next)
				wg.Wait()
				if ferr != nil {
					b.Fatal(ferr)
				}
				b.ReportMetric(float64(b.N*c.size)/b.Elapsed().Seconds(), "decisions/s")
			})
		}
	}
}

func oneRequest(hc *http.Client, api *httpapi.Client, url string, body []byte, want int, typed bool, i int) error {
	if typed {
		_, err := api.Check(context.Background(), "bench", fmt.Sprint("k", i%benchKeys), 1)
		return err
	}
	resp, err := hc.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
