// Package httpapi is the HTTP face of a rate limiter: the check API that
// apps in any language (and nginx) call, a net/http middleware for Go apps,
// and a Client for the API.
//
// Everything depends on the small Checker interface, which *cluster.Node
// satisfies; httpapi never starts a node itself.
//
// # Endpoints
//
//	POST /v1/check        {"policy":"auth","key":"ip:203.0.113.7","hits":1}
//	                      200 allowed or 429 denied, body CheckResponse:
//	                      {"allowed","policy","limit","remaining","reset_after_ms","retry_after_ms"}
//	POST /v1/check/batch  {"checks":[{...},...]}, at most Options.MaxBatch
//	                      (default 1000): 200 {"results":[...]} in order; a bad
//	                      check gets "error", "field" and "status" of its own
//	GET  /v1/auth         ?policy=&key=&hits= for nginx auth_request: 204 or 403
//	GET  /v1/policies     {"policies":[...]}, each in the policy JSON form
//	GET|PUT|DELETE /v1/policies/{name}                 one policy (admin API)
//	PUT|DELETE     /v1/policies/{name}/overrides/{key} one key's limit (admin API)
//	GET  /v1/cluster      the node's view of its cluster (admin API)
//	GET  /healthz         200 while the process serves
//	GET  /readyz          200, or 503 when the Checker's Ready() is false
//	GET  /metrics         Options.Gatherer, for Prometheus
//
// An omitted hits is 1; hits 0 peeks without consuming. Durations in bodies
// are milliseconds, rounded up. Check and batch bodies may also be msgpack
// maps with the same field names (Content-Type: application/msgpack); the
// answers are JSON either way.
//
// Checks answer with the headers of the IETF draft
// (draft-ietf-httpapi-ratelimit-headers): RateLimit-Policy: "auth";q=10;w=900
// (q hits per w seconds) and RateLimit: "auth";r=3;t=540 (r remaining, reset
// in t seconds); the older X-RateLimit-Limit, X-RateLimit-Remaining and
// X-RateLimit-Reset (seconds); and Retry-After (seconds, at least 1) on a
// denial. Seconds are rounded up.
//
// Bad input is a 4xx with an ErrorResponse body, {"error":"...","field":"key"}:
// malformed JSON, unknown fields, data after the object, an empty or long
// key (Options.MaxKeyLen, default 512 bytes), negative or huge hits
// (Options.MaxHits, default 1,000,000), an unknown policy (400); a body over
// Options.MaxBodyBytes (default 1 MiB, 413); a wrong method (405). A failure of the Checker that is not
// the caller's fault (a closed node, an unreachable backend) is a 503.
//
// Request bodies of the plain form clients send are decoded without
// reflection, and answers are written without it; anything unusual (escapes,
// non-ASCII keys) goes through encoding/json, with the same result.
//
// # Admin API
//
// The policy table of a cluster is changed through any of its nodes; the
// node forwards the change to the raft leader and answers once it is
// committed and applied on itself, so a GET on the same node that follows
// sees it. Other nodes apply it a moment later.
//
// Options.AdminToken turns it on. Without a token, the writes answer 403
// {"error":"admin API disabled: set --admin-token / RATELIMIT_ADMIN_TOKEN"}
// and the reads (GET /v1/policies, GET /v1/policies/{name}, GET
// /v1/cluster) are public, as GET /v1/policies always was. With a token,
// every /v1/policies... endpoint and /v1/cluster want
// "Authorization: Bearer TOKEN"; a missing or wrong one is a 401 with
// WWW-Authenticate: Bearer. The token is compared in constant time (as
// SHA-256 digests, which hides its length too). The check endpoints never
// need it. The handler does not log that the admin API is off: whoever
// builds the Options does (ratelimitd serve).
//
//	GET    /v1/policies/{name}   200 the policy, or 404
//	PUT    /v1/policies/{name}   body: a policy in its JSON form,
//	                             {"algorithm":"gcra","limit":5,"window_ms":1000,"burst":10}
//	                             200 with the policy as the node now holds it
//	DELETE /v1/policies/{name}   204, or 404
//	PUT    /v1/policies/{name}/overrides/{key}   body {"limit":N}: 200 with the policy
//	DELETE /v1/policies/{name}/overrides/{key}   204, or 404 for no such override
//	GET    /v1/cluster           Options.Status() as JSON: for a node, cluster.Status
//	                             (members, raft state, leader, voters, non_voters,
//	                             applied_index, policy_version); 404 without Status
//
// PUT replaces the whole policy, overrides included: fields left out take
// their zero value. The name in the body may be left out; if given, it must
// be the path's (else 400 naming "name"), so a PUT never writes a policy
// other than the one its URL names. Bodies are strict JSON within
// Options.MaxBodyBytes: unknown fields, a second value, a wrong type are
// 400s. An invalid policy is a 400 whose "field" is the JSON field at fault
// ("window_ms", "burst", "overrides", ...). An unknown policy or override
// is a 404. A write that does not commit within Options.AdminTimeout
// (default 10 s: no raft leader, a partition) is a 503, and may still be
// applied later. Keys in the path are path-escaped (url.PathEscape; a "/"
// is %2F); the keys "." and ".." cannot be addressed.
//
// Writes go to Options.Admin, a PolicyAdmin, by default the Checker when it
// is one (*cluster.Node is). A method other than those listed is a 405 with
// an Allow header.
//
// # Usage
//
// Serve the API of a node:
//
//	reg := prometheus.NewRegistry()
//	node, err := cluster.Start(ctx, cluster.Config{Metrics: reg})
//	if err != nil { ... }
//	defer node.Close(ctx)
//	h, err := httpapi.NewHandler(httpapi.Options{
//		Checker: node, Gatherer: reg, Metrics: reg,
//		AdminToken: token, // "" leaves the admin API off
//		Status:     func() any { return node.Status() },
//	})
//	if err != nil { ... }
//	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: h}
//
// Limit the handlers of a Go app by client IP, behind a load balancer on
// 10.0.0.0/8 that sets X-Forwarded-For:
//
//	byIP := httpapi.ClientIP(httpapi.ClientIPConfig{
//		TrustedHeader:  "X-Forwarded-For",
//		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
//	})
//	limit := httpapi.Middleware(node, "auth", byIP, httpapi.MiddlewareOptions{Logger: logger})
//	mux.Handle("POST /login", limit(loginHandler))
//
// The middleware sets the headers on every response it checked, answers a
// denial with 429 and a CheckResponse body, and, if the check fails (unknown
// policy, backend down), lets the request through and logs (at most a line a
// second), or answers 503 with FailClosed. Any func(*http.Request) (string,
// error) is a KeyFunc: a user ID from the session, an API key (HeaderKey).
//
// Call the API of a node from Go:
//
//	c := &httpapi.Client{BaseURL: "http://127.0.0.1:8080"}
//	d, err := c.Check(ctx, "auth", "ip:203.0.113.7", 1) // a 429 is d.Allowed == false, not an error
//
// Change a policy, with the admin token:
//
//	admin := &httpapi.Client{BaseURL: "http://127.0.0.1:8080", Token: token}
//	p, err := admin.SetPolicy(ctx, bucket.Policy{Name: "login", Limit: 5, Window: time.Minute})
//	var se *httpapi.StatusError
//	if errors.As(err, &se) && se.StatusCode == 400 { ... se.Field names the field ... }
//
// # nginx
//
// nginx's auth_request allows a request on a 2xx from the auth endpoint,
// denies it on 401 or 403, and fails it with a 500 on anything else, so
// /v1/auth answers 204 and 403. The subrequest keeps the method of the
// original request, so /v1/auth answers every method; it reads no body. The
// key comes from the query or, as nginx passes it, the X-RateLimit-Key header
// (the policy may come from X-RateLimit-Policy); the query wins:
//
//	upstream ratelimit { server 127.0.0.1:8080; keepalive 32; }
//
//	location /api/ {
//		auth_request /_ratelimit;
//		auth_request_set $rl_policy $upstream_http_ratelimit_policy;
//		auth_request_set $rl_state  $upstream_http_ratelimit;
//		auth_request_set $rl_retry  $upstream_http_retry_after;
//		add_header RateLimit-Policy $rl_policy always;
//		add_header RateLimit $rl_state always;
//		error_page 403 = @ratelimited;
//		proxy_pass http://app;
//	}
//	location = /_ratelimit {
//		internal;
//		proxy_method GET;
//		proxy_pass_request_body off;
//		proxy_set_header Content-Length "";
//		proxy_set_header X-RateLimit-Key "ip:$remote_addr";
//		proxy_http_version 1.1;
//		proxy_set_header Connection "";
//		proxy_pass http://ratelimit/v1/auth?policy=api_limit;
//	}
//	location @ratelimited {
//		add_header Retry-After $rl_retry always;
//		default_type application/json;
//		return 429 '{"error":"rate limited"}';
//	}
//
// Pass $remote_addr rather than $binary_remote_addr: a header must be text.
// The "ip:" prefix is the project's key convention for clients by address,
// the one ClientIP gives the Go middleware: nginx and the middleware then
// count one client under one key.
// If the rate limiter is down, auth_request fails the request with a 500;
// to fail open instead, add error_page 500 502 503 504 = @allow to the
// /api/ location with a @allow location that proxies to the app.
package httpapi
