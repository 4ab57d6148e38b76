package ring_test

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster/ring"
)

// jsFixture is the file the Node.js client's tests read
// (clients/node/test/ring.test.js): a ring as GET /v1/ring publishes it
// (members in name order, the partition table as their indexes) and keys
// with the hash of their encoding, their partition and their owner, as
// the nodes compute them.
const jsFixture = "../../clients/node/test/fixtures/ring.json"

type fixtureCase struct {
	Policy    string `json:"policy"`
	Key       string `json:"key"`
	Hash      string `json:"hash"` // xxhash64 of the encoding, hex
	Partition int    `json:"partition"`
	Owner     string `json:"owner"`
}

type fixture struct {
	Members []string      `json:"members"`
	Owners  []int         `json:"owners"`
	Cases   []fixtureCase `json:"cases"`
}

func makeFixture() fixture {
	members := []string{"n1", "n2", "n3"}
	r := ring.New(members, ring.Config{})
	f := fixture{Members: members}
	index := map[string]int{}
	for i, m := range members {
		index[m] = i
	}
	for _, o := range r.Owners() {
		f.Owners = append(f.Owners, index[o])
	}
	keys := []bucket.Key{
		{Policy: "auth", ID: "ip:203.0.113.7"},
		{Policy: "default", ID: "user:42"},
		{Policy: "a", ID: "b"},
		{Policy: "a_b", ID: "c"}, {Policy: "a", ID: "b_c"}, // the same bytes joined, not encoded
		{Policy: "api_limit", ID: "ip:2001:db8::1"},
		{Policy: "sensitive", ID: "clé:ünïcödé:用户:🙂"},
		{Policy: strings.Repeat("p", 127), ID: "k"},                     // a 1-byte length
		{Policy: strings.Repeat("p", 128), ID: "k"},                     // a 2-byte length
		{Policy: strings.Repeat("q", 300), ID: strings.Repeat("k", 33)}, // past 32 bytes: the striped loop
	}
	for i := range 100 { // every length of the tail and of the stripes
		keys = append(keys, bucket.Key{Policy: "bench", ID: "k" + strings.Repeat("x", i) + strconv.Itoa(i)})
	}
	for _, k := range keys {
		enc, _ := k.AppendBinary(nil)
		h := xxhash.Sum64(enc)
		f.Cases = append(f.Cases, fixtureCase{
			Policy: k.Policy, Key: k.ID, Hash: strconv.FormatUint(h, 16),
			Partition: int(h % uint64(len(f.Owners))), Owner: r.Owner(enc),
		})
	}
	return f
}

// TestNodeClientFixture checks that the Node.js client's fixture is what
// this package computes: the owners its tests expect are the nodes'.
// RATELIMIT_UPDATE_FIXTURES=1 writes it anew.
func TestNodeClientFixture(t *testing.T) {
	f := makeFixture()
	for _, c := range f.Cases {
		if f.Members[f.Owners[c.Partition]] != c.Owner {
			t.Fatalf("%+v: the table says %s", c, f.Members[f.Owners[c.Partition]])
		}
	}
	want, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if os.Getenv("RATELIMIT_UPDATE_FIXTURES") == "1" {
		if err := os.WriteFile(jsFixture, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(jsFixture)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not what the ring computes: run RATELIMIT_UPDATE_FIXTURES=1 go test -run TestNodeClientFixture ./cluster/ring/", jsFixture)
	}
}
