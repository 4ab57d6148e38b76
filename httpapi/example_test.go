package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
)

func ExampleNewHandler() {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	node, err := cluster.Start(ctx, cluster.Config{Metrics: reg})
	if err != nil {
		panic(err)
	}
	defer node.Close(ctx)
	h, err := httpapi.NewHandler(httpapi.Options{Checker: node, Gatherer: reg, Metrics: reg})
	if err != nil {
		panic(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/check", strings.NewReader(`{"policy":"auth","key":"ip:203.0.113.7"}`)))
	fmt.Println(rec.Code, rec.Header().Get("RateLimit-Policy"), rec.Header().Get("X-RateLimit-Remaining"))
	// Output: 200 "auth";q=10;w=900 9
}

func ExampleMiddleware() {
	ctx := context.Background()
	node, err := cluster.Start(ctx, cluster.Config{})
	if err != nil {
		panic(err)
	}
	defer node.Close(ctx)
	byIP := httpapi.ClientIP(httpapi.ClientIPConfig{
		TrustedHeader:  "X-Forwarded-For",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	})
	login := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "welcome") })
	h := httpapi.Middleware(node, "auth", byIP, httpapi.MiddlewareOptions{})(login)

	for i := 0; i < 11; i++ {
		req := httptest.NewRequest("POST", "/login", nil)
		req.RemoteAddr = "10.1.2.3:4567"                   // the load balancer
		req.Header.Set("X-Forwarded-For", "198.51.100.23") // the client
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if i >= 9 {
			fmt.Println(rec.Code, rec.Header().Get("X-RateLimit-Remaining"), rec.Header().Get("Retry-After") != "")
		}
	}
	// Output:
	// 200 0 false
	// 429 0 true
}

func ExampleClient() {
	ctx := context.Background()
	node, err := cluster.Start(ctx, cluster.Config{})
	if err != nil {
		panic(err)
	}
	defer node.Close(ctx)
	h, _ := httpapi.NewHandler(httpapi.Options{Checker: node})
	srv := httptest.NewServer(h)
	defer srv.Close()

	c := &httpapi.Client{BaseURL: srv.URL, HTTPClient: srv.Client()}
	d, err := c.Check(ctx, "auth", "user:42", 10)
	fmt.Println(d.Allowed, d.Remaining, err)
	d, err = c.Check(ctx, "auth", "user:42", 1) // a denial is not an error
	fmt.Println(d.Allowed, d.RetryAfter > 0, err)
	_, err = c.Check(ctx, "nope", "user:42", 1)
	fmt.Println(err)
	// Output:
	// true 0 <nil>
	// false true <nil>
	// httpapi: status 400: unknown policy "nope" (field policy)
}
