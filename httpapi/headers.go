package httpapi

import (
	"net/http"
	"strconv"

	"github.com/vibewell/ratelimit/bucket"
)

// Header names, in canonical form so that they can be set on an
// http.Header map directly.
const (
	// HeaderRateLimitPolicy is the IETF draft's quota policy header:
	// "auth";q=10;w=900 (q hits per w seconds).
	HeaderRateLimitPolicy = "Ratelimit-Policy"
	// HeaderRateLimit is the IETF draft's state header: "auth";r=3;t=540
	// (r hits remaining, t seconds until the quota resets).
	HeaderRateLimit = "Ratelimit"
	// HeaderLimit is X-RateLimit-Limit: the capacity Remaining counts from.
	HeaderLimit = "X-Ratelimit-Limit"
	// HeaderRemaining is X-RateLimit-Remaining.
	HeaderRemaining = "X-Ratelimit-Remaining"
	// HeaderReset is X-RateLimit-Reset: seconds until the counter is full
	// again, rounded up.
	HeaderReset = "X-Ratelimit-Reset"
	// HeaderRetryAfter is Retry-After, in seconds (at least 1), sent on a
	// denial.
	HeaderRetryAfter = "Retry-After"
	// HeaderAuthKey carries the key of GET /v1/auth when the query has none
	// (nginx: proxy_set_header X-RateLimit-Key $remote_addr).
	HeaderAuthKey = "X-Ratelimit-Key"
	// HeaderAuthPolicy carries the policy of GET /v1/auth when the query has
	// none.
	HeaderAuthPolicy = "X-Ratelimit-Policy"
)

// SetHeaders sets the rate-limit headers of decision d, taken on key under
// policy p: RateLimit-Policy, RateLimit, X-RateLimit-Limit,
// X-RateLimit-Remaining, X-RateLimit-Reset, and Retry-After when d is a
// denial. Seconds are rounded up. Any Retry-After already in h is removed
// when d is allowed.
func SetHeaders(h http.Header, p *bucket.Policy, key string, d bucket.Decision) {
	// All values go into one string, sliced: one allocation for the text
	// and one for the value slices.
	var arr [160]byte
	b := arr[:0]
	b = appendSFString(b, p.Name)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, p.LimitFor(key), 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, ceilSeconds(p.Window), 10)
	e0 := len(b)
	b = appendSFString(b, p.Name)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, ";t="...)
	resetAt := len(b)
	b = strconv.AppendInt(b, ceilSeconds(d.ResetAfter), 10)
	e1 := len(b)
	b = strconv.AppendInt(b, d.Limit, 10)
	e2 := len(b)
	b = strconv.AppendInt(b, d.Remaining, 10)
	e3 := len(b)
	if !d.Allowed {
		b = strconv.AppendInt(b, max(1, ceilSeconds(d.RetryAfter)), 10)
	}
	s := string(b)
	n := 5
	if !d.Allowed {
		n = 6
	}
	v := make([]string, n)
	v[0], v[1], v[2], v[3], v[4] = s[:e0], s[e0:e1], s[e1:e2], s[e2:e3], s[resetAt:e1]
	h[HeaderRateLimitPolicy] = v[0:1:1]
	h[HeaderRateLimit] = v[1:2:2]
	h[HeaderLimit] = v[2:3:3]
	h[HeaderRemaining] = v[3:4:4]
	h[HeaderReset] = v[4:5:5]
	if d.Allowed {
		delete(h, HeaderRetryAfter)
	} else {
		v[5] = s[e3:]
		h[HeaderRetryAfter] = v[5:6:6]
	}
}

// appendSFString appends s as a structured-field string (RFC 8941): quoted,
// with '"' and '\' escaped; bytes outside printable ASCII, which it cannot
// hold, become '?'. Policy names never need either.
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
