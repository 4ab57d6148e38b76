package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// TopDenied asks GET /v1/top for the n most denied keys of policy over the
// last window (1 to 15 minutes), cluster-wide. An unknown policy is a
// *StatusError with StatusCode 404.
func (c *Client) TopDenied(ctx context.Context, policy string, window time.Duration, n int) (TopDeniedResponse, error) {
	q := url.Values{"policy": {policy}, "window": {window.String()}, "n": {strconv.Itoa(n)}}
	var resp TopDeniedResponse
	_, err := c.do(ctx, http.MethodGet, "/v1/top?"+q.Encode(), nil, &resp, http.StatusOK)
	return resp, err
}

// Owner asks GET /v1/owner where key's counter under policy lives, and
// its value.
func (c *Client) Owner(ctx context.Context, policy, key string) (OwnerResponse, error) {
	q := url.Values{"policy": {policy}, "key": {key}}
	var resp OwnerResponse
	_, err := c.do(ctx, http.MethodGet, "/v1/owner?"+q.Encode(), nil, &resp, http.StatusOK)
	return resp, err
}

// Overview asks GET /v1/overview for the members and the cluster's
// counters.
func (c *Client) Overview(ctx context.Context) (OverviewResponse, error) {
	var resp OverviewResponse
	_, err := c.do(ctx, http.MethodGet, "/v1/overview", nil, &resp, http.StatusOK)
	return resp, err
}
