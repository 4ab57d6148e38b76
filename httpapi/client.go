package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/vibewell/ratelimit/bucket"
)

// Client calls the HTTP API of a node. The zero value is not usable: set
// BaseURL. It is safe for concurrent use.
type Client struct {
	// BaseURL is the node's address, e.g. "http://127.0.0.1:8080".
	BaseURL string
	// HTTPClient sends the requests. Default: http.DefaultClient.
	HTTPClient *http.Client
}

// maxErrorBody bounds how much of an error body the client reads.
const maxErrorBody = 64 << 10

// Check takes hits from the counter of key under policy. A denial (429) is
// a Decision with Allowed == false and a nil error; other answers are a
// *StatusError (errors.Is(err, ErrStatus)).
func (c *Client) Check(ctx context.Context, policy, key string, hits int64) (bucket.Decision, error) {
	var body CheckRequest
	body.Policy, body.Key, body.Hits = policy, key, hits
	var resp CheckResponse
	status, err := c.do(ctx, http.MethodPost, "/v1/check", body, &resp, http.StatusOK, http.StatusTooManyRequests)
	if err != nil {
		return bucket.Decision{}, err
	}
	if (status == http.StatusOK) != resp.Allowed {
		return bucket.Decision{}, fmt.Errorf("httpapi: status %d with allowed=%v", status, resp.Allowed)
	}
	return resp.Decision(), nil
}

// CheckBatch decides the checks in one request, in order. A check the
// server could not decide has its Error set; the error return is for a
// failure of the whole request.
func (c *Client) CheckBatch(ctx context.Context, checks []CheckRequest) ([]CheckResult, error) {
	if checks == nil {
		checks = []CheckRequest{}
	}
	var resp BatchResponse
	if _, err := c.do(ctx, http.MethodPost, "/v1/check/batch", BatchRequest{Checks: checks}, &resp, http.StatusOK); err != nil {
		return nil, err
	}
	if len(resp.Results) != len(checks) {
		return nil, fmt.Errorf("httpapi: batch of %d checks answered with %d results", len(checks), len(resp.Results))
	}
	return resp.Results, nil
}

// Policies returns the node's policy table.
func (c *Client) Policies(ctx context.Context) ([]bucket.Policy, error) {
	var resp PoliciesResponse
	if _, err := c.do(ctx, http.MethodGet, "/v1/policies", nil, &resp, http.StatusOK); err != nil {
		return nil, err
	}
	return resp.Policies, nil
}

// do sends in (JSON, if not nil) and decodes an answer of one of the ok
// statuses into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any, ok ...int) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("httpapi: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, body)
	if err != nil {
		return 0, fmt.Errorf("httpapi: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("httpapi: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	for _, s := range ok {
		if resp.StatusCode == s {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				return 0, fmt.Errorf("httpapi: %s %s: decode answer: %w", method, path, err)
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody)) // let the connection be reused
			return resp.StatusCode, nil
		}
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	se := &StatusError{StatusCode: resp.StatusCode}
	var er ErrorResponse
	if json.Unmarshal(b, &er) == nil && er.Error != "" {
		se.Message, se.Field = er.Error, er.Field
	} else {
		se.Message = strings.TrimSpace(string(b[:min(len(b), 200)]))
		if se.Message == "" {
			se.Message = http.StatusText(resp.StatusCode)
		}
	}
	return resp.StatusCode, se
}
