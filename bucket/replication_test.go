package bucket_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// TestPolicyReplicationField: "replication" reads "async" and "sync",
// is left out of the JSON form when async (so that older nodes, which
// refuse unknown fields, read it), and an unknown name or value is an
// error naming the field.
func TestPolicyReplicationField(t *testing.T) {
	var p bucket.Policy
	if err := json.Unmarshal([]byte(`{"name":"auth","limit":10,"window_ms":900000,"replication":"sync"}`), &p); err != nil {
		t.Fatal(err)
	}
	if p.Replication != bucket.ReplicateSync || p.Validate() != nil {
		t.Fatalf("sync: %+v, %v", p, p.Validate())
	}
	b, _ := json.Marshal(p)
	if !strings.Contains(string(b), `"replication":"sync"`) {
		t.Fatalf("sync policy encodes as %s", b)
	}
	p.Replication = bucket.ReplicateAsync
	if b, _ := json.Marshal(p); strings.Contains(string(b), "replication") {
		t.Fatalf("async policy encodes as %s", b)
	}
	if err := json.Unmarshal([]byte(`{"name":"auth","limit":10,"window_ms":900000,"replication":"quorum"}`), &p); err == nil {
		t.Fatal("replication \"quorum\" accepted")
	}
	bad := bucket.Policy{Name: "x", Limit: 1, Window: time.Second, Replication: 7}
	var fe *bucket.FieldError
	if err := bad.Validate(); !errors.As(err, &fe) || fe.Field != "replication" {
		t.Fatalf("replication 7: %v", err)
	}
}
