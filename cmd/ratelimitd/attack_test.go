package main

// A 3-process cluster started as the README shows (the first node makes
// the key and logs the command line that joins it; the others pass the
// key), attacked from this process, which has no key: each attack of a
// stranger on the cluster ports is refused with nothing changed.

import (
	"crypto/tls"
	be "encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/internal/testpki"
	"github.com/vibewell/ratelimit/transport"
)

// joinLine is the line the first node logs: the command that joins it.
var joinLine = regexp.MustCompile(`another node joins this cluster with: ratelimitd serve --join (\S+) --cluster-key ([A-Za-z0-9_-]+)`)

// guardedEnv is the environment of the attacked nodes: auth is 5 an hour.
var guardedEnv = map[string]string{"RATE_LIMIT_AUTH_MAX": "5", "RATE_LIMIT_AUTH_WINDOW_MS": "3600000"}

// attacked is a running cluster and what must not change.
type attacked struct {
	nodes    []*node
	key      string // the cluster key the first node generated
	victims  []string
	policies string
}

// prepare uses up the victims' keys and records the policy table.
func (a *attacked) prepare(t *testing.T) {
	t.Helper()
	waitMembers(t, 30*time.Second, a.nodes...)
	for i := range 6 {
		key := "victim-" + strconv.Itoa(i)
		if r := check(a.nodes[i%3].URL, "auth", key, 5); r.Err != nil || !r.Allowed {
			t.Fatalf("using up %s: %+v", key, r)
		}
		a.victims = append(a.victims, key)
	}
	a.policies = policiesOf(t, a.nodes[0])
}

func policiesOf(t *testing.T, n *node) string {
	t.Helper()
	resp, err := adminDo("GET", n.URL+"/v1/policies", nil)
	if err != nil {
		t.Fatalf("%s: GET /v1/policies: %v", n.Name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: GET /v1/policies: %d %s", n.Name, resp.StatusCode, b)
	}
	// The version counts changes; the table itself is what must not move.
	var v map[string]json.RawMessage
	if json.Unmarshal(b, &v) == nil {
		if p, ok := v["policies"]; ok {
			return string(p)
		}
	}
	return string(b)
}

// assertUnchanged: the same table everywhere, the victims denied, a fresh
// key allowed, and three members.
func (a *attacked) assertUnchanged(t *testing.T) {
	t.Helper()
	for i, n := range a.nodes {
		if got := policiesOf(t, n); got != a.policies {
			t.Errorf("%s: policy table changed:\n got %s\nwant %s", n.Name, got, a.policies)
		}
		for _, key := range a.victims {
			if r := check(n.URL, "auth", key, 1); r.Err != nil || r.Allowed {
				t.Errorf("%s: used-up key %s: %+v, want denied", n.Name, key, r)
			}
		}
		fresh := "fresh-" + strconv.Itoa(i) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		if r := check(n.URL, "default", fresh, 1); r.Err != nil || !r.Allowed {
			t.Errorf("%s: a fresh check: %+v, want allowed", n.Name, r)
		}
		if v, err := getCluster(n.URL); err != nil || len(v.alive()) != len(a.nodes) {
			t.Errorf("%s: members %v (%v), want the %d nodes", n.Name, v.alive(), err, len(a.nodes))
		}
	}
}

// TestAttackProcessCluster: three processes started as the README shows,
// then each attack from this process, which has no key.
func TestAttackProcessCluster(t *testing.T) {
	dir := t.TempDir()
	noKey := map[string]string{"RATELIMIT_CLUSTER_KEY": ""} // the first node makes one
	for k, v := range guardedEnv {
		noKey[k] = v
	}
	n1 := startNode(t, "n1", noKey, "--data-dir", dir+"/n1")
	m := joinLine.FindStringSubmatch(n1.log.String())
	if m == nil {
		t.Fatalf("the first node logged no join command line:\n%s", n1.log)
	}
	if m[1] != n1.Gossip {
		t.Errorf("the join line names %s, the node gossips on %s", m[1], n1.Gossip)
	}
	if strings.Count(n1.log.String(), m[2]) != 1 {
		t.Errorf("the key is logged %d times, want once", strings.Count(n1.log.String(), m[2]))
	}
	a := &attacked{key: m[2], nodes: []*node{n1}}
	for i := 2; i <= 3; i++ {
		a.nodes = append(a.nodes, startNode(t, "n"+strconv.Itoa(i), guardedEnv,
			"--join", m[1], "--cluster-key", m[2], "--data-dir", dir+"/n"+strconv.Itoa(i)))
	}
	a.prepare(t)
	runAttacks(t, a, attacker{bind: "127.0.0.1", dial: net.DialTimeout, start: func(t *testing.T, name string, args ...string) *node {
		return startNode(t, name, guardedEnv, args...)
	}})
	if fi, err := os.Stat(dir + "/n1/cluster.key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the generated key is not kept in --data-dir with mode 0600: %v %v", fi, err)
	}
}

// attacker is where the attacks come from.
type attacker struct {
	bind  string // the attacker's own IP
	dial  func(network, addr string, timeout time.Duration) (net.Conn, error)
	start func(t *testing.T, name string, args ...string) *node // a rogue ratelimitd process
}

// runAttacks makes each attack against a and checks nothing changed.
func runAttacks(t *testing.T, a *attacked, at attacker) {
	t.Run("PolicyWriteFrame", func(t *testing.T) { attackPolicyWrite(t, a, at) })
	t.Run("ForgedRaft", func(t *testing.T) { attackRaft(t, a, at) })
	t.Run("RogueMember", func(t *testing.T) { attackRogue(t, a, at) })
	t.Run("FrameFlood", func(t *testing.T) { attackFlood(t, a, at) })
}

// strangerTLS is a client with a certificate of a CA the cluster does not
// know, that does not check the server (the refusal tested is the
// server's).
func strangerTLS(t *testing.T) *tls.Config {
	c := testpki.NewCA(t).Mutual(t, "mallory")
	c.InsecureSkipVerify = true
	c.RootCAs = nil
	return c
}

// callFrame is a raw peer-transport call frame.
func callFrame(t *testing.T, method string, body []byte) []byte {
	t.Helper()
	payload, err := msgpack.Marshal([]any{method, body})
	if err != nil {
		t.Fatal(err)
	}
	f := be.BigEndian.AppendUint32(nil, uint32(6+len(payload)))
	f = append(f, transport.Version, 3, 0, 0, 0, 7)
	return append(f, payload...)
}

// attackPolicyWrite (attack 1): policy writes on every peer port, in the
// clear and with a stranger's certificate.
func attackPolicyWrite(t *testing.T, a *attacked, at attacker) {
	raise, _ := json.Marshal(map[string]any{"op": "set_policy", "policy": map[string]any{"name": "auth", "limit": 4294967295, "window": 1e6}})
	del, _ := json.Marshal(map[string]any{"op": "delete_policy", "name": "api_limit"})
	for _, n := range a.nodes {
		for _, body := range [][]byte{raise, del} {
			for _, useTLS := range []bool{false, true} {
				nc, err := at.dial("tcp", n.Peer, 2*time.Second)
				if err != nil {
					t.Fatalf("dial %s: %v", n.Peer, err)
				}
				if useTLS {
					nc = tls.Client(nc, strangerTLS(t))
				}
				_ = nc.SetDeadline(time.Now().Add(3 * time.Second))
				var hdr [10]byte
				if _, err := nc.Write(callFrame(t, "policy.apply", body)); err == nil {
					if _, err := io.ReadFull(nc, hdr[:]); err == nil && hdr[5] == 4 {
						t.Errorf("%s answered a stranger's policy write (tls=%v)", n.Name, useTLS)
					}
				}
				nc.Close()
			}
		}
	}
	time.Sleep(300 * time.Millisecond)
	a.assertUnchanged(t)
	refusedLogged(t, a.nodes[0], "peer")
}

// refusedLogged checks that n logged a refusal on port.
func refusedLogged(t *testing.T, n *node, port string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(n.log.String(), "refused") || !strings.Contains(n.log.String(), port) {
		if time.Now().After(deadline) {
			t.Errorf("%s logged no refusal on the %s port:\n%s", n.Name, port, n.log)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// strangerStream is a raft stream layer of the attacker: plain TCP, or TLS
// with a stranger's certificate.
type strangerStream struct {
	net.Listener
	at  attacker
	tls *tls.Config
}

func (s strangerStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.at.dial("tcp", string(addr), timeout)
	if err != nil || s.tls == nil {
		return c, err
	}
	tc := tls.Client(c, s.tls)
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

// attackRaft (attacks 3 and 5): a forged AppendEntries with a policy change
// and 1 MiB junk entries, and a RequestVote with LeadershipTransfer, to
// every raft port.
func attackRaft(t *testing.T, a *attacked, at attacker) {
	v, err := getCluster(a.nodes[0].URL)
	if err != nil || v.Raft == nil {
		t.Fatalf("cluster view: %v", err)
	}
	leader := v.Raft.Leader
	cmd, _ := json.Marshal(map[string]any{"op": "set_policy", "policy": map[string]any{"name": "auth", "limit": 4294967295, "window": 1e6}})
	for _, cfg := range []*tls.Config{nil, strangerTLS(t)} {
		ln, err := net.Listen("tcp", net.JoinHostPort(at.bind, "0"))
		if err != nil {
			t.Fatal(err)
		}
		tr := raft.NewNetworkTransport(strangerStream{Listener: ln, at: at, tls: cfg}, 1, 2*time.Second, io.Discard)
		for _, n := range a.nodes {
			target := raft.ServerAddress(n.Raft)
			entries := []*raft.Log{{Index: 1000, Term: 1000, Type: raft.LogCommand, Data: cmd}}
			for i := range 4 {
				entries = append(entries, &raft.Log{Index: uint64(1001 + i), Term: 1000, Type: raft.LogCommand, Data: make([]byte, 1<<20)})
			}
			ae := &raft.AppendEntriesRequest{
				RPCHeader: raft.RPCHeader{ID: []byte("mallory"), Addr: []byte(tr.LocalAddr())},
				Term:      1000, LeaderCommitIndex: 1004, Entries: entries,
			}
			if err := tr.AppendEntries(raft.ServerID(n.Name), target, ae, &raft.AppendEntriesResponse{}); err == nil {
				t.Errorf("%s answered a stranger's AppendEntries (tls=%v)", n.Name, cfg != nil)
			}
			rv := &raft.RequestVoteRequest{
				RPCHeader: raft.RPCHeader{ID: []byte("mallory"), Addr: []byte(tr.LocalAddr())},
				Term:      1001, LastLogIndex: 1 << 40, LastLogTerm: 1000, LeadershipTransfer: true,
			}
			if err := tr.RequestVote(raft.ServerID(n.Name), target, rv, &raft.RequestVoteResponse{}); err == nil {
				t.Errorf("%s answered a stranger's RequestVote (tls=%v)", n.Name, cfg != nil)
			}
		}
		tr.Close()
	}
	time.Sleep(time.Second) // an election would have started
	for _, n := range a.nodes {
		if v, err := getCluster(n.URL); err != nil || v.Raft == nil || v.Raft.Leader != leader {
			t.Errorf("%s: leader %+v (%v), want %s unchanged", n.Name, v.Raft, err, leader)
		}
	}
	a.assertUnchanged(t)
	refusedLogged(t, a.nodes[1], "raft")
}

// attackRogue (attack 4): a ratelimitd with another key joins through the
// first node; it stays alone, and the cluster logs the refusal.
func attackRogue(t *testing.T, a *attacked, at attacker) {
	code, out, _ := runToEnd(t, 30*time.Second, nil, "keygen")
	if code != 0 {
		t.Fatalf("keygen: exit %d", code)
	}
	other := strings.TrimSpace(out)
	rogue := at.start(t, "rogue", "--join", a.nodes[0].Gossip, "--cluster-key", other)
	time.Sleep(3 * time.Second) // join attempts and gossip rounds
	if ready(rogue.URL) {
		t.Error("the rogue node is ready: it joined")
	}
	if v, err := getCluster(rogue.URL); err == nil && len(v.alive()) != 1 {
		t.Errorf("the rogue sees members %v, want itself alone", v.alive())
	}
	// Counters are not handed to it: a used-up key is still denied by
	// every member (assertUnchanged), whatever the rogue decides alone.
	a.assertUnchanged(t)
	refusedLogged(t, a.nodes[0], "gossip")
	rogue.stop()
}

// floodRSSBound bounds the growth of a node's resident memory under the
// flood of 250 connections announcing 4 MiB frames (before the transport
// bounded them: about 1 GiB).
const floodRSSBound = 64 << 20

// attackFlood (attack 5): 250 connections announce 4 MiB frames on a
// peer port; the node's memory stays bounded, the connections are closed
// and checks go on.
func attackFlood(t *testing.T, a *attacked, at attacker) {
	n := a.nodes[1]
	before := rss(t, n)
	hdr := be.BigEndian.AppendUint32(nil, 4<<20-4)
	hdr = append(hdr, transport.Version, 3, 0, 0, 0, 1, 0x92, 0xa1, 'x')
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 250 {
		c, err := at.dial("tcp", n.Peer, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		_, _ = c.Write(hdr)
	}
	time.Sleep(300 * time.Millisecond)
	if grew := rss(t, n) - before; grew > floodRSSBound {
		t.Errorf("%s grew by %d MiB under the flood, bound %d MiB", n.Name, grew>>20, floodRSSBound>>20)
	}
	a.assertUnchanged(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					mu.Lock()
					open++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if open > 0 {
		t.Errorf("%d of 250 connections still open after 10 s", open)
	}
}

// rss returns the resident memory of n's process, in bytes.
func rss(t *testing.T, n *node) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(n.cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatalf("memory of %s: %v", n.Name, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS for %s", n.Name)
	return 0
}
