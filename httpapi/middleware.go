package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
)

// KeyFunc returns the key a request is limited by, e.g. its client IP or
// user ID. Any function of this shape is one.
type KeyFunc func(*http.Request) (string, error)

// ErrNoKey is wrapped by the errors of the KeyFuncs of this package when a
// request carries no key.
var ErrNoKey = errors.New("httpapi: no key in request")

// MiddlewareOptions tunes Middleware. The zero value takes one hit per
// request and lets requests through when the check fails.
type MiddlewareOptions struct {
	// Hits is what one request takes. Default: 1.
	Hits int64
	// FailClosed answers 503 when the key cannot be found or the check
	// fails (an unknown policy, a backend failure). Default: false, the
	// request goes through, and the failure is logged.
	FailClosed bool
	// Logger receives check failures, at most one line a second. Default:
	// none.
	Logger *slog.Logger
}

// Middleware limits the requests of a handler under policy, by the key
// that key returns. It sets the rate-limit headers (see SetHeaders) on every
// response it checked, and answers a denied request itself with 429, a
// CheckResponse body and Retry-After. It panics if c or key is nil.
func Middleware(c Checker, policy string, key KeyFunc, opts MiddlewareOptions) func(http.Handler) http.Handler {
	if c == nil || key == nil {
		panic("httpapi: Middleware needs a Checker and a KeyFunc")
	}
	if opts.Hits <= 0 {
		opts.Hits = 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	errLog := newErrorLog(opts.Logger)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fail := func(err error) {
				if r.Context().Err() == nil {
					errLog.Log("rate limit check failed", "policy", policy, "path", r.URL.Path, "err", err)
				}
				if opts.FailClosed {
					writeError(w, &inputError{status: http.StatusServiceUnavailable, msg: "rate limit check failed"})
					return
				}
				next.ServeHTTP(w, r)
			}
			k, err := key(r)
			if err != nil {
				fail(err)
				return
			}
			p, ok := c.Policy(policy)
			if !ok {
				fail(fmt.Errorf("httpapi: unknown policy %q", policy))
				return
			}
			d, err := c.Allow(r.Context(), policy, k, opts.Hits)
			if err != nil {
				fail(err)
				return
			}
			h := w.Header()
			SetHeaders(h, &p, k, d)
			if d.Allowed {
				next.ServeHTTP(w, r)
				return
			}
			var arr [192]byte
			b := append(appendDecision(arr[:0], policy, d), '}', '\n')
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write(b)
		})
	}
}

// HeaderKey is a KeyFunc that reads the key from a request header, e.g. an
// API key or a user ID set by an authenticating proxy. A missing or empty
// header is an error wrapping ErrNoKey.
func HeaderKey(name string) KeyFunc {
	return func(r *http.Request) (string, error) {
		if v := r.Header.Get(name); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("%w: header %s is empty", ErrNoKey, name)
	}
}

// ClientIPConfig says how ClientIP finds a client's address behind proxies.
type ClientIPConfig struct {
	// TrustedHeader names the header in which trusted proxies pass the
	// client address, e.g. "X-Forwarded-For" or "X-Real-IP". It may hold a
	// comma-separated list of hops, the nearest last. Default: none; the
	// peer address is the client.
	TrustedHeader string
	// TrustedProxies are the networks of the proxies whose TrustedHeader is
	// believed. The header is read only when the peer is in one of them.
	TrustedProxies []netip.Prefix
}

// ClientIP is a KeyFunc that returns "ip:" and the client's IP address in
// its text form ("ip:203.0.113.7", "ip:2001:db8::1"; IPv4-mapped IPv6
// addresses as IPv4). It is the project's one key convention for clients
// by address: deploy/nginx sends "ip:$remote_addr", so a client counts
// under one key whether nginx or this middleware checks it.
//
// When the peer (the request's RemoteAddr) is a trusted proxy and
// TrustedHeader is set, the header's hops are read from the right (the hop
// the trusted proxy added last), skipping trusted proxies: the first
// untrusted hop is the client, as a client can forge every hop left of it.
// If every hop is trusted, the leftmost one is the client. A hop that is
// not an IP address, where it would be the client, is an error; so is a
// RemoteAddr that is not one.
func ClientIP(cfg ClientIPConfig) KeyFunc {
	trusted := func(a netip.Addr) bool {
		for _, p := range cfg.TrustedProxies {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return func(r *http.Request) (string, error) {
		peer, ok := parseHop(r.RemoteAddr)
		if !ok {
			return "", fmt.Errorf("%w: remote address %q is not an IP address", ErrNoKey, r.RemoteAddr)
		}
		if cfg.TrustedHeader == "" || !trusted(peer) {
			return ipKey(peer), nil
		}
		values := r.Header.Values(cfg.TrustedHeader)
		client := peer
		for i := len(values) - 1; i >= 0; i-- {
			v := values[i]
			for v != "" {
				var hop string
				if j := strings.LastIndexByte(v, ','); j >= 0 {
					v, hop = v[:j], v[j+1:]
				} else {
					v, hop = "", v
				}
				hop = strings.TrimSpace(hop)
				if hop == "" {
					continue
				}
				a, ok := parseHop(hop)
				if !ok {
					return "", fmt.Errorf("%w: %s hop %q is not an IP address", ErrNoKey, cfg.TrustedHeader, hop)
				}
				if !trusted(a) {
					return ipKey(a), nil
				}
				client = a
			}
		}
		return ipKey(client), nil
	}
}

// ipKey is the key of a client address: "ip:" and its text form.
func ipKey(a netip.Addr) string { return "ip:" + a.String() }

// parseHop reads an address with or without a port ("1.2.3.4",
// "1.2.3.4:80", "[::1]:80", "[::1]"), unmapped and without a zone.
func parseHop(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err2 := netip.ParseAddrPort(s)
		if err2 != nil {
			if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
				return parseHop(s[1 : len(s)-1])
			}
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone(""), true
}
