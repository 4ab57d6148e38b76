package httpapi

import (
	"context"
	"fmt"
	"net/http"

	"github.com/vibewell/ratelimit/bucket"
)

// Reset resets the counter of key under policy to a fresh one and returns
// the decision a peek then gets. The node needs Client.Token to be its
// client or admin token; without it the answer is a *StatusError with
// StatusCode 403, and nothing changes.
func (c *Client) Reset(ctx context.Context, policy, key string) (bucket.Decision, error) {
	var resp CheckResponse
	if _, err := c.do(ctx, http.MethodPost, "/v1/reset", ResetRequest{Policy: policy, Key: key}, &resp, http.StatusOK); err != nil {
		return bucket.Decision{}, err
	}
	return resp.Decision(), nil
}

// Refund gives hits back to the counter of key under policy, never below a
// fresh counter, and returns the decision a peek then gets. It needs
// Client.Token as Reset does.
func (c *Client) Refund(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	var resp CheckResponse
	if _, err := c.do(ctx, http.MethodPost, "/v1/refund", RefundRequest{Policy: policy, Key: key, Hits: hits}, &resp, http.StatusOK); err != nil {
		return bucket.Decision{}, err
	}
	return resp.Decision(), nil
}

// ResetBatch resets the counters in one request, answered in order; an
// item the server refused has its Error set.
func (c *Client) ResetBatch(ctx context.Context, resets []ResetRequest) ([]CheckResult, error) {
	if resets == nil {
		resets = []ResetRequest{}
	}
	return c.refundBatch(ctx, "/v1/reset/batch", ResetBatchRequest{Resets: resets}, len(resets))
}

// RefundBatch makes the refunds in one request, answered in order; an item
// the server refused has its Error set.
func (c *Client) RefundBatch(ctx context.Context, refunds []RefundRequest) ([]CheckResult, error) {
	if refunds == nil {
		refunds = []RefundRequest{}
	}
	return c.refundBatch(ctx, "/v1/refund/batch", RefundBatchRequest{Refunds: refunds}, len(refunds))
}

func (c *Client) refundBatch(ctx context.Context, path string, body any, n int) ([]CheckResult, error) {
	var resp BatchResponse
	if _, err := c.do(ctx, http.MethodPost, path, body, &resp, http.StatusOK); err != nil {
		return nil, err
	}
	if len(resp.Results) != n {
		return nil, fmt.Errorf("httpapi: batch of %d answered with %d results", n, len(resp.Results))
	}
	return resp.Results, nil
}
