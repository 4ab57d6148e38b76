package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// TestOwnerAwareClientSkipsUnspecifiedAddrs: a member that advertises
// 0.0.0.0 or [::] (a node listening on every interface) is not dialled;
// its keys go to the configured nodes.
func TestOwnerAwareClientSkipsUnspecifiedAddrs(t *testing.T) {
	ring := RingView{Version: "v1", Members: []RingMember{
		{Name: "a", HTTPAddr: "0.0.0.0:8080"},
		{Name: "b", HTTPAddr: "[::]:8080"},
		{Name: "c", HTTPAddr: "10.0.0.3:8080"},
		{Name: "d", HTTPAddr: ""},
	}, Owners: []int{0, 1, 2, 3}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(ring)
	}))
	defer srv.Close()
	c := &OwnerAwareClient{Nodes: []string{srv.URL}}
	v, err := c.getRing(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"", "", "http://10.0.0.3:8080", ""}; !slices.Equal(v.urls, want) {
		t.Errorf("urls %q, want %q", v.urls, want)
	}
}
