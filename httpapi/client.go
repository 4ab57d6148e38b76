package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
	// Token is sent as a bearer token (Authorization: Bearer TOKEN) when
	// set: the admin token that the policy and cluster endpoints need once
	// the node has one.
	Token string
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

// GetPolicy returns the named policy; an unknown one is a *StatusError
// with StatusCode 404.
func (c *Client) GetPolicy(ctx context.Context, name string) (bucket.Policy, error) {
	var p bucket.Policy
	if _, err := c.do(ctx, http.MethodGet, policyPath(name), nil, &p, http.StatusOK); err != nil {
		return bucket.Policy{}, err
	}
	return p, nil
}

// SetPolicy adds or replaces p (overrides included) in the cluster's
// policy table, and returns the policy as the node now holds it. An
// invalid policy is a *StatusError with StatusCode 400 and the field at
// fault in Field.
func (c *Client) SetPolicy(ctx context.Context, p bucket.Policy) (bucket.Policy, error) {
	if p.Name == "" {
		return bucket.Policy{}, errors.New("httpapi: SetPolicy: the policy has no name")
	}
	var stored bucket.Policy
	if _, err := c.do(ctx, http.MethodPut, policyPath(p.Name), p, &stored, http.StatusOK); err != nil {
		return bucket.Policy{}, err
	}
	return stored, nil
}

// DeletePolicy removes the named policy from the cluster's policy table.
// A built-in policy that another component depends on is refused with a
// *StatusError of status 409 that names the dependency.
func (c *Client) DeletePolicy(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodDelete, policyPath(name), nil, nil, http.StatusNoContent)
	return err
}

// ForceDeletePolicy is DeletePolicy, built-in policies included
// (?force=true).
func (c *Client) ForceDeletePolicy(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodDelete, policyPath(name)+"?force=true", nil, nil, http.StatusNoContent)
	return err
}

// SetOverride sets the limit of key under the named policy, and returns
// the policy as the node now holds it.
func (c *Client) SetOverride(ctx context.Context, policy, key string, limit int64) (bucket.Policy, error) {
	var stored bucket.Policy
	in := OverrideRequest{Limit: &limit}
	if _, err := c.do(ctx, http.MethodPut, overridePath(policy, key), in, &stored, http.StatusOK); err != nil {
		return bucket.Policy{}, err
	}
	return stored, nil
}

// DeleteOverride removes the override of key under the named policy.
func (c *Client) DeleteOverride(ctx context.Context, policy, key string) error {
	_, err := c.do(ctx, http.MethodDelete, overridePath(policy, key), nil, nil, http.StatusNoContent)
	return err
}

// Cluster returns the node's view of its cluster (GET /v1/cluster) as the
// node wrote it: for a cluster node, the JSON of cluster.Status.
func (c *Client) Cluster(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	if _, err := c.do(ctx, http.MethodGet, "/v1/cluster", nil, &raw, http.StatusOK); err != nil {
		return nil, err
	}
	return raw, nil
}

func policyPath(name string) string { return "/v1/policies/" + url.PathEscape(name) }

func overridePath(policy, key string) string {
	return policyPath(policy) + "/overrides/" + url.PathEscape(key)
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
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
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
			if out == nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
				return resp.StatusCode, nil
			}
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
