package httpapi_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/vibewell/ratelimit/httpapi"
)

// TestDashboardServesItsOwnFiles checks that the page and its assets come
// from the binary, with a policy that forbids loading anything else, and
// that none of them names another site.
func TestDashboardServesItsOwnFiles(t *testing.T) {
	h, err := httpapi.NewHandler(httpapi.Options{Checker: nopChecker{}, AdminToken: testToken})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for _, tc := range []struct{ path, ctype, part string }{
		{"/dashboard", "text/html", `<script src="/dashboard/app.js"`},
		{"/dashboard/app.js", "javascript", "/v1/overview"},
		{"/dashboard/style.css", "text/css", "@media"},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), tc.ctype) || !strings.Contains(string(b), tc.part) {
			t.Fatalf("GET %s: %d %s, %d bytes", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
		if m := external.FindString(string(b)); m != "" {
			t.Errorf("%s names another site: %q", tc.path, m)
		}
	}
	resp, err := http.Get(srv.URL + "/dashboard/nope.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("missing asset: %d", resp.StatusCode)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = c.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/dashboard" {
		t.Errorf("GET /: %d to %q, want a redirect to /dashboard", resp.StatusCode, resp.Header.Get("Location"))
	}
}
