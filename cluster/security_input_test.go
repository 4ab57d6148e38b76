package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
	"github.com/vibewell/ratelimit/internal/testcluster"
	"github.com/vibewell/ratelimit/transport"
)

// The security tests replay the attacks on a cluster that its inputs
// must withstand, even from an authenticated peer: each asserts that the
// attack is refused and that nothing changed (the policy table, the
// used-up keys, the other checks).

// invalidCommands are policy commands a peer may send that must never be
// committed or applied: malformed, invalid, or refused by the table.
var invalidCommands = map[string]string{
	"not json":         `{"op":"set_policy","policy":`,
	"not an object":    `[1,2,3]`,
	"unknown op":       `{"op":"drop_table"}`,
	"unknown field":    `{"op":"delete_policy","name":"default","also":"auth"}`,
	"duplicate field":  `{"op":"delete_policy","name":"nothere","name":"api_limit"}`,
	"wrong case":       `{"OP":"delete_policy","Name":"api_limit"}`,
	"data after":       `{"op":"delete_policy","name":"x"} {"op":"delete_policy","name":"api_limit"}`,
	"zero limit":       `{"op":"set_policy","policy":{"name":"auth","limit":0,"window_ms":1000}}`,
	"zero window":      `{"op":"set_policy","policy":{"name":"auth","limit":10,"window_ms":0}}`,
	"numeric enum":     `{"op":"set_policy","policy":{"name":"auth","algorithm":9,"limit":10,"window_ms":1000}}`,
	"no policy":        `{"op":"set_policy"}`,
	"bad name":         `{"op":"set_policy","policy":{"name":"a b","limit":10,"window_ms":1000}}`,
	"long override":    `{"op":"set_override","name":"auth","key":"` + strings.Repeat("k", 513) + `","limit":1000}`,
	"zero override":    `{"op":"set_override","name":"auth","key":"k","limit":0}`,
	"delete api_limit": `{"op":"delete_policy","name":"api_limit"}`,
	"delete auth":      `{"op":"delete_policy","name":"auth"}`,
	"too large":        `{"op":"delete_policy","name":"x","key":"` + strings.Repeat("x", cluster.MaxCommandBytes) + `"}`,
}

// useUp takes every hit of key under policy on node n, and fails unless
// the next one is denied.
func useUp(t *testing.T, n *cluster.Node, policy, key string) {
	t.Helper()
	ctx := context.Background()
	for range 100 {
		d, err := n.Allow(ctx, policy, key, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Allowed {
			return
		}
	}
	t.Fatalf("%s/%s still allowed after 100 hits", policy, key)
}

// stillDenies fails unless key is denied and a fresh key allowed, on
// every live node.
func stillDenies(t *testing.T, c *testcluster.Cluster, policy, key string) {
	t.Helper()
	for _, i := range c.Live() {
		d, err := c.Node(i).Allow(context.Background(), policy, key, 0)
		if err != nil || d.Allowed {
			t.Errorf("node %d: used-up %s/%s: %+v, %v", i, policy, key, d, err)
		}
		d, err = c.Node(i).Allow(context.Background(), policy, "fresh-"+key+strings.Repeat("x", i), 1)
		if err != nil || !d.Allowed {
			t.Errorf("node %d: fresh key of %s: %+v, %v", i, policy, d, err)
		}
	}
}

func TestSecurityInvalidPolicyCommandNotCommitted(t *testing.T) {
	regs := make([]*prometheus.Registry, 3)
	c := testcluster.Start(t, 3, testcluster.Options{Configure: func(i int, cfg *cluster.Config) {
		regs[i] = prometheus.NewRegistry()
		cfg.Metrics = regs[i]
	}})
	waitFor(t, "seeded table", func() bool { return seeded(c) })
	leader := c.Leader()
	useUp(t, c.Node(leader), "auth", "ip:203.0.113.7")
	before := c.Node(leader).Policies()
	index := c.Node(leader).Status().Raft.AppliedIndex

	// An authenticated peer (it holds the cluster key and names itself
	// as a member) on the peer port: the leader's policy.apply method.
	attacker := peerAs(t, c, c.Node((leader+1)%3).Name())
	for name, cmd := range invalidCommands {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		body, err := attacker.Call(ctx, c.Node(leader).Addrs().Peer, "policy.apply", []byte(cmd))
		cancel()
		var res struct{ Kind, Error string }
		if err == nil {
			err = json.Unmarshal(body, &res)
		}
		if err != nil || res.Kind == "" || res.Kind == "not_leader" {
			t.Errorf("%s: answered %s, %v; want a refusal", name, body, err)
		}
	}
	if got := c.Node(leader).Status().Raft.AppliedIndex; got != index {
		t.Errorf("applied index %d → %d: a refused command was committed", index, got)
	}
	refused, _ := metricSum(t, regs[leader], "ratelimit_policy_commands_refused_total")
	if refused < float64(len(invalidCommands)) {
		t.Errorf("refusals counted: %v, want %d", refused, len(invalidCommands))
	}
	for _, i := range c.Live() {
		if got := c.Node(i).Policies(); !reflect.DeepEqual(got, before) {
			t.Errorf("node %d: table changed:\n%v\nwas\n%v", i, got, before)
		}
	}
	stillDenies(t, c, "auth", "ip:203.0.113.7")
}

func TestSecurityInvalidLogEntryNotApplied(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := testcluster.Start(t, 3, testcluster.Options{Configure: func(i int, cfg *cluster.Config) {
		if i == 1 {
			cfg.Metrics = reg
		}
	}})
	waitFor(t, "seeded table", func() bool { return seeded(c) })
	n := c.Node(1)
	useUp(t, n, "auth", "ip:203.0.113.8")
	before := n.Policies()
	version := n.Status().Raft.PolicyVersion
	// Entries a rogue leader could commit: the state machine of every
	// node checks them again.
	for name, cmd := range invalidCommands {
		if err := n.ApplyEntry([]byte(cmd)); err == nil {
			t.Errorf("%s: applied", name)
		}
	}
	if got := n.Policies(); !reflect.DeepEqual(got, before) {
		t.Errorf("table changed:\n%v\nwas\n%v", got, before)
	}
	if got := n.Status().Raft.PolicyVersion; got != version {
		t.Errorf("policy version %d → %d", version, got)
	}
	if got, _ := metricSum(t, reg, "ratelimit_policy_commands_refused_total"); got != float64(len(invalidCommands)) {
		t.Errorf("refusals counted: %v, want %d", got, len(invalidCommands))
	}
	stillDenies(t, c, "auth", "ip:203.0.113.8")
	// A valid entry still applies.
	if err := n.ApplyEntry([]byte(`{"op":"set_override","name":"auth","key":"vip","limit":20}`)); err != nil {
		t.Fatal(err)
	}
	if p, _ := n.Policy("auth"); p.Overrides["vip"] != 20 {
		t.Errorf("valid entry not applied: %+v", p)
	}
}

func TestSecurityDeleteBuiltinPolicyConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := start(t, cluster.Config{Metrics: reg})
	h, err := httpapi.NewHandler(httpapi.Options{Checker: n, AdminToken: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	del := func(path string) (int, httpapi.ErrorResponse) {
		req, _ := http.NewRequest("DELETE", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer secret")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var er httpapi.ErrorResponse
		_ = json.NewDecoder(resp.Body).Decode(&er)
		return resp.StatusCode, er
	}
	ctx := context.Background()
	if _, err := n.Allow(ctx, "api_limit", "ip:1", 1); err != nil {
		t.Fatal(err)
	}
	before := n.Policies()
	for _, name := range []string{"api_limit", "auth", "sensitive", "default", "admin"} {
		code, er := del("/v1/policies/" + name)
		if code != http.StatusConflict || !strings.Contains(er.Error, "built in") {
			t.Errorf("DELETE %s: %d %+v, want 409 naming the dependency", name, code, er)
		}
		if err := n.DeletePolicy(ctx, name); !errors.Is(err, cluster.ErrPolicyInUse) || !errors.Is(err, bucket.ErrPolicyInUse) {
			t.Errorf("DeletePolicy(%s) = %v", name, err)
		}
	}
	if code, er := del("/v1/policies/api_limit"); !strings.Contains(er.Error, "nginx") {
		t.Errorf("409 for api_limit does not name nginx: %d %+v", code, er)
	}
	if got := n.Policies(); !reflect.DeepEqual(got, before) {
		t.Fatalf("table changed: %v", got)
	}
	if code, _ := del("/v1/policies/api_limit?force=yes"); code != http.StatusBadRequest {
		t.Errorf("force=yes: %d, want 400", code)
	}
	// Forced: deleted, and its metric series with it.
	if code, er := del("/v1/policies/api_limit?force=true"); code != http.StatusNoContent {
		t.Fatalf("forced delete: %d %+v", code, er)
	}
	if _, ok := n.Policy("api_limit"); ok {
		t.Error("api_limit still held after a forced delete")
	}
	if _, got := metricSum(t, reg, "ratelimit_decisions_total", "policy", "api_limit"); got != 0 {
		t.Errorf("%d decision series of api_limit left after its delete", got)
	}
	if _, got := metricSum(t, reg, "ratelimit_decisions_total", "policy", "auth"); got == 0 {
		t.Error("the series of auth went too")
	}
}

// metricSum is the sum of the samples of the counter family name in
// reg, and how many series it has, of those whose labels include the
// pairs of match (name, value, ...).
func metricSum(t *testing.T, reg *prometheus.Registry, name string, match ...string) (sum float64, series int) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
		metrics:
			for _, m := range mf.GetMetric() {
				for i := 0; i+1 < len(match); i += 2 {
					if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == match[i] && l.GetValue() == match[i+1] }) {
						continue metrics
					}
				}
				sum += m.GetCounter().GetValue()
				series++
			}
		}
	}
	return sum, series
}

// peerAs is a peer transport authenticated with c's cluster key as the
// node name: what a node holding the key, or a thief of it, can open.
func peerAs(t *testing.T, c *testcluster.Cluster, name string) *transport.TCP {
	t.Helper()
	tr, err := transport.NewTCP(transport.TCPConfig{MaxFrame: 2 * cluster.MaxCommandBytes, TLS: cluster.StrangerTLS(c.Key(), name, false)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// forgedStates is a hand-off or copy body, in the form nodes send.
func forgedStates(from, policy string, keys []string, t int64, count uint32, span uint32) []byte {
	items := make([]map[string]any, len(keys))
	for i, k := range keys {
		c := make([]uint32, bucket.Slots+1)
		for j := range c {
			c[j] = count
		}
		items[i] = map[string]any{"p": policy, "k": k, "t": t, "c": c, "e": uint32(math.MaxUint32), "s": span}
	}
	b, err := msgpack.Marshal(map[string]any{"f": from, "v": 1, "i": items})
	if err != nil {
		panic(err)
	}
	return b
}

func TestSecurityForgedCountersDropped(t *testing.T) {
	regs := make([]*prometheus.Registry, 3)
	c := testcluster.Start(t, 3, testcluster.Options{Configure: func(i int, cfg *cluster.Config) {
		regs[i] = prometheus.NewRegistry()
		cfg.Metrics = regs[i]
	}})
	waitFor(t, "seeded table", func() bool { return seeded(c) })
	const used, victim = "ip:203.0.113.9", "user:victim"
	owner := c.Owner("auth", used)
	useUp(t, c.Node(owner), "auth", used)
	victimOwner := c.Owner("auth", victim)
	before := c.Node(owner).Policies()
	// Counters the cluster's own start-up may have dropped (a copy from a
	// member not yet in the receiver's ring) are not the attack's.
	dropped := func() (total float64) {
		for i := range regs {
			n, _ := metricSum(t, regs[i], "ratelimit_peer_states_dropped_total")
			total += n
		}
		return total
	}
	base := dropped()

	// Each message comes over a connection authenticated with the
	// cluster key as the node it names, a member or not.
	peers := map[string]*transport.TCP{}
	send := func(to int, method string, body []byte) {
		var msg struct {
			From string `msgpack:"f"`
		}
		if err := msgpack.Unmarshal(body, &msg); err != nil {
			t.Fatal(err)
		}
		if peers[msg.From] == nil {
			peers[msg.From] = peerAs(t, c, msg.From)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = peers[msg.From].Call(ctx, c.Node(to).Addrs().Peer, method, body)
	}
	other := func(not int) string {
		for _, i := range c.Live() {
			if i != not {
				return c.Node(i).Name()
			}
		}
		return ""
	}
	width := (15 * time.Minute).Microseconds() / bucket.Slots
	now := time.Now().UnixMicro()
	future := (now/width + 20) * width
	const span = 900_000 // auth's window, in ms
	// The rotation attack: a state 20 slots ahead with one hit, from a
	// member and from a stranger, as a hand-off and as a copy, 5 rounds.
	for range 5 {
		for _, from := range []string{other(owner), "rogue"} {
			send(owner, "handoff", forgedStates(from, "auth", []string{used}, future, 1, span))
			for _, i := range c.Live() {
				send(i, "replica", forgedStates(from, "auth", []string{used}, future, 1, span))
			}
		}
	}
	// The lock attack: maximal counts for the victim's fresh key, to its
	// owner and to every node as a copy from its owner.
	send(victimOwner, "handoff", forgedStates(other(victimOwner), "auth", []string{victim}, now/width*width, math.MaxUint32, span))
	for _, i := range c.Live() {
		send(i, "replica", forgedStates(c.Node(victimOwner).Name(), "auth", []string{victim}, now/width*width, math.MaxUint32, span))
	}

	stillDenies(t, c, "auth", used)
	for _, i := range c.Live() {
		if d, err := c.Node(i).Allow(context.Background(), "auth", victim, 0); err != nil || !d.Allowed || d.Remaining != 10 {
			t.Errorf("node %d: the victim's key: %+v, %v", i, d, err)
		}
		if got := c.Node(i).Policies(); !reflect.DeepEqual(got, before) {
			t.Errorf("node %d: table changed", i)
		}
	}
	// Every forged counter was dropped and counted, by reason.
	total := dropped() - base
	if want := float64(5*2*4 + 1 + 3); total != want {
		t.Errorf("dropped counters counted: %v, want %v", total, want)
	}
	want := 5.0 // the member's future states; the stranger's go as "sender"
	if victimOwner == owner {
		want++
	}
	if n, _ := metricSum(t, regs[owner], "ratelimit_peer_states_dropped_total", "message", "handoff", "reason", "state"); n != want {
		t.Errorf("future states dropped by the owner: %v, want %v", n, want)
	}
	if n, _ := metricSum(t, regs[victimOwner], "ratelimit_peer_states_dropped_total", "message", "handoff", "reason", "state"); n < 1 {
		t.Errorf("maximal counts not dropped as a state by the victim key's owner")
	}
}

// TestHandoffAnswerNamesRefused: a hand-off from a member merges the
// counters of keys the receiver owns, or that the sender owns in the
// receiver's ring (the receiver's ring is behind the sender's), and names
// in its answer the positions of those whose owner in the receiver's ring
// is a third member, so that the sender keeps them rather than losing
// them: none of them is merged.
func TestHandoffAnswerNamesRefused(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly})
	const to, from, third = 0, 1, 2
	pick := func(owner int) string {
		for i := range 100_000 {
			if k := "h-" + strconv.Itoa(i); c.Owner("small", k) == owner {
				return k
			}
		}
		t.Fatalf("no key owned by node %d", owner)
		return ""
	}
	keys := []string{pick(to), pick(from), pick(third), pick(third)}
	// Each counter is used up: 50 hits in its newest slot.
	width := time.Hour.Microseconds() / bucket.Slots
	now := time.Now().UnixMicro() / width
	var msg map[string]any
	if err := msgpack.Unmarshal(forgedStates(c.Node(from).Name(), "small", keys, now*width, 0, 3_600_000), &msg); err != nil {
		t.Fatal(err)
	}
	for _, it := range msg["i"].([]any) {
		it.(map[string]any)["c"].([]any)[now%(bucket.Slots+1)] = uint32(50)
		it.(map[string]any)["e"] = uint32(time.Now().Add(2 * time.Hour).Unix())
	}
	body, err := msgpack.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	answer, err := peerAs(t, c, c.Node(from).Name()).Call(ctx, c.Node(to).Addrs().Peer, "handoff", body)
	if err != nil {
		t.Fatal(err)
	}
	var refused []int
	if err := msgpack.Unmarshal(answer, &refused); err != nil {
		t.Fatalf("answer %x: %v", answer, err)
	}
	if !slices.Equal(refused, []int{2, 3}) {
		t.Errorf("refused positions %v, want [2 3] (the keys of the third member)", refused)
	}
	// The two merged counters are used up on the receiver, which decides
	// the first key; the second it decides once the sender hands it over.
	if d, err := c.Node(to).Allow(ctx, "small", keys[0], 0); err != nil || d.Remaining != 0 {
		t.Errorf("the receiver's own key after the hand-off: %+v, %v; want nothing remaining", d, err)
	}
}
