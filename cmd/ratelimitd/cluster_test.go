package main

// Tests of real ratelimitd processes joined into a cluster with --join, on
// loopback ports picked by the kernel (port 0), read back from each
// process's `listening` line.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster/ring"
)

// node is one ratelimitd process of a test cluster, with what it takes to
// start it again with the same flags.
type node struct {
	*proc
	Name               string
	Gossip, Peer, Raft string
	args               []string
	env                map[string]string
}

// testClusterKey is the cluster key of the test clusters (a fixed one: a
// test cluster is on loopback, and its nodes must share it).
const testClusterKey = "dGVzdC1jbHVzdGVyLWtleS0zMi1ieXRlcy1sb25nISE"

var ringRebuilt = regexp.MustCompile(`msg="ring rebuilt" .*members=2\b`)

var logAddr = regexp.MustCompile(`\bmsg=listening\b.*\bgossip=(\S+) peer=(\S+) raft=(\S+)`)

// clusterAddrs returns the gossip, peer and raft addresses of the
// listening line in log, text or JSON, or nil.
func clusterAddrs(log string) []string {
	if m := logAddr.FindStringSubmatch(log); m != nil {
		return m[1:]
	}
	for _, line := range strings.Split(log, "\n") {
		var j struct{ Msg, Gossip, Peer, Raft string }
		if json.Unmarshal([]byte(line), &j) == nil && j.Msg == "listening" && j.Gossip != "" {
			return []string{j.Gossip, j.Peer, j.Raft}
		}
	}
	return nil
}

// startNode starts `ratelimitd serve` as a cluster node named name, with
// free loopback ports unless args set them, tight gossip timings, and
// extra args; it waits for the listening line and reads the addresses.
func startNode(t *testing.T, name string, env map[string]string, args ...string) *node {
	t.Helper()
	if _, ok := env["RATELIMIT_CLUSTER_KEY"]; !ok && !hasFlag(args, "--cluster-key") && !hasFlag(args, "--insecure-cluster") {
		env = maps.Clone(env)
		if env == nil {
			env = map[string]string{}
		}
		env["RATELIMIT_CLUSTER_KEY"] = testClusterKey // one cluster per test; strangers are tested in security_test.go
	}
	all := []string{"--node-name", name, "--http-addr", "127.0.0.1:0", "--admin-token", adminToken}
	if !hasFlag(args, "--gossip-profile") {
		all = append(all, "--gossip-profile", "local")
	}
	if !hasFlag(args, "--gossip-addr") {
		all = append(all, "--gossip-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0")
	}
	all = append(all, args...)
	n := &node{Name: name, args: all, env: env}
	n.proc = startServe(t, all, env)
	m := clusterAddrs(n.log.String())
	if m == nil {
		t.Fatalf("node %s: no gossip/peer/raft addresses in the listening line:\n%s", name, n.log)
	}
	n.Gossip, n.Peer, n.Raft = m[0], m[1], m[2]
	return n
}

// restart starts n again on the same ports with the same flags, plus
// extra.
func (n *node) restart(t *testing.T, extra ...string) *node {
	t.Helper()
	args := slicesWithout(n.args, "--gossip-addr", "--peer-addr", "--raft-addr", "--node-name", "--gossip-profile", "--http-addr", "--join", "--admin-token")
	args = append(args, "--gossip-addr", n.Gossip, "--peer-addr", n.Peer, "--raft-addr", n.Raft)
	args = append(args, extra...)
	return startNode(t, n.Name, n.env, args...)
}

// slicesWithout drops the named flags and their values from args.
func slicesWithout(args []string, flags ...string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		drop := false
		for _, f := range flags {
			if args[i] == f {
				drop = true
			}
		}
		if drop {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// clusterView is the part of GET /v1/cluster the tests read.
type clusterView struct {
	Node    string `json:"node"`
	Members []struct {
		Name     string `json:"name"`
		HTTPAddr string `json:"http_addr"`
		State    string `json:"state"`
	} `json:"members"`
	Raft *struct {
		Leader        string   `json:"leader"`
		Voters        []string `json:"voters"`
		PolicyVersion uint64   `json:"policy_version"`
	} `json:"raft"`
	ReplicaCounters int `json:"replica_counters"`
}

func (v clusterView) alive() []string {
	var names []string
	for _, m := range v.Members {
		if m.State == "alive" {
			names = append(names, m.Name)
		}
	}
	return names
}

var testClient = &http.Client{Timeout: 5 * time.Second}

// adminToken is the --admin-token of the test clusters.
const adminToken = "test-admin-token"

// adminDo sends an admin API request with the token.
func adminDo(method, url string, body []byte) (*http.Response, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	return testClient.Do(req)
}

func getCluster(url string) (clusterView, error) {
	var v clusterView
	resp, err := adminDo("GET", url+"/v1/cluster", nil)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("status %d", resp.StatusCode)
	}
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

func ready(url string) bool {
	resp, err := testClient.Get(url + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitMembers waits until every node is ready, lists exactly the nodes as
// alive members, and has them all as raft voters under a leader.
func waitMembers(t *testing.T, timeout time.Duration, nodes ...*node) {
	t.Helper()
	want := len(nodes)
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok := true
		for _, n := range nodes {
			v, err := getCluster(n.URL)
			if !ready(n.URL) || err != nil || len(v.alive()) != want ||
				v.Raft == nil || v.Raft.Leader == "" || len(v.Raft.Voters) != want {
				ok = false
				last = fmt.Sprintf("%s: ready %v, err %v, alive %v, raft %+v", n.Name, ready(n.URL), err, v.alive(), v.Raft)
				break
			}
		}
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the %d nodes did not all see %d alive members within %v; last: %s", want, want, timeout, last)
}

// checkResult is one check's answer.
type checkResult struct {
	Status    int
	Allowed   bool
	Remaining int64
	Err       error
}

// check sends hits to policy/key at url.
func check(url, policy, key string, hits int64) checkResult {
	body, _ := json.Marshal(map[string]any{"policy": policy, "key": key, "hits": hits})
	resp, err := testClient.Post(url+"/v1/check", "application/json", bytes.NewReader(body))
	if err != nil {
		return checkResult{Err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var d struct {
		Allowed   bool  `json:"allowed"`
		Remaining int64 `json:"remaining"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return checkResult{Status: resp.StatusCode, Err: fmt.Errorf("body %q: %w", b, err)}
	}
	return checkResult{Status: resp.StatusCode, Allowed: d.Allowed, Remaining: d.Remaining}
}

// owner computes the node that owns key under policy, as every node does.
func owner(policy, key string, names ...string) string {
	enc, _ := bucket.Key{Policy: policy, ID: key}.AppendBinary(nil)
	return ring.New(names, ring.Config{}).Owner(enc)
}

// startCluster starts n nodes; nodes 2.. join node 1's gossip address.
func startCluster(t *testing.T, n int, env map[string]string, args func(i int) []string) []*node {
	t.Helper()
	nodes := []*node{startNode(t, "n1", env, args(0)...)}
	for i := 1; i < n; i++ {
		nodes = append(nodes, startNode(t, "n"+strconv.Itoa(i+1), env, append(args(i), "--join", nodes[0].Gossip)...))
	}
	waitMembers(t, 30*time.Second, nodes...)
	return nodes
}

const clusterLimit = 50

// TestClusterProcesses runs three processes joined with --join and checks
// one limit held exactly across the three HTTP ports, then checks going on,
// without a 5xx, while a key's owner is killed with SIGKILL.
func TestClusterProcesses(t *testing.T) {
	env := map[string]string{"RATE_LIMIT_DEFAULT_MAX": strconv.Itoa(clusterLimit), "RATE_LIMIT_DEFAULT_WINDOW_MS": "3600000"}
	nodes := startCluster(t, 3, env, func(int) []string { return nil })
	names := []string{"n1", "n2", "n3"}
	byName := map[string]int{"n1": 0, "n2": 1, "n3": 2}

	t.Run("exact", func(t *testing.T) {
		// 3N checks of one key, round-robin over the three nodes from 6
		// concurrent senders: exactly N allowed.
		var allowed, denied atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan string, 3*clusterLimit)
		for w := 0; w < 6; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := w; i < 3*clusterLimit; i += 6 {
					r := check(nodes[i%3].URL, "default", "exact", 1)
					switch {
					case r.Err != nil || (r.Status != http.StatusOK && r.Status != http.StatusTooManyRequests):
						errs <- fmt.Sprintf("check %d: status %d, err %v", i, r.Status, r.Err)
					case r.Allowed:
						allowed.Add(1)
					default:
						denied.Add(1)
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		if allowed.Load() != clusterLimit || denied.Load() != 2*clusterLimit {
			t.Errorf("allowed %d, denied %d; want exactly %d allowed of %d", allowed.Load(), denied.Load(), clusterLimit, 3*clusterLimit)
			for _, n := range nodes {
				t.Logf("log of %s:\n%s", n.Name, n.log)
			}
		}
	})

	t.Run("owner killed", func(t *testing.T) {
		// Load one key from two senders per surviving node, SIGKILL its
		// owner, and keep going until the survivors have seen it gone and
		// a second more. No check may fail (no 5xx, no error): the
		// failure mode `local` decides while the owner is unreachable,
		// and the new owner afterwards.
		const key = "killed"
		o := byName[owner("default", key, names...)]
		var survivors []*node
		for i, n := range nodes {
			if i != o {
				survivors = append(survivors, n)
			}
		}
		var (
			stop            atomic.Bool
			before, after   atomic.Int64 // allowed before and after the kill
			total, failures atomic.Int64
			killed          atomic.Bool
			firstFail       atomic.Value
		)
		var wg sync.WaitGroup
		for _, s := range survivors {
			for range 2 {
				wg.Add(1)
				go func(url string) {
					defer wg.Done()
					for i := 0; i < 2000 && !stop.Load(); i++ {
						r := check(url, "default", key, 1)
						total.Add(1)
						if r.Err != nil || r.Status >= 500 {
							failures.Add(1)
							firstFail.CompareAndSwap(nil, fmt.Sprintf("status %d, err %v", r.Status, r.Err))
							continue
						}
						if r.Allowed {
							if killed.Load() {
								after.Add(1)
							} else {
								before.Add(1)
							}
						}
					}
				}(s.URL)
			}
		}
		for total.Load() < 20 {
			time.Sleep(time.Millisecond)
		}
		// Detection is read from the survivors' logs: /v1/cluster keeps
		// listing a crashed member as "alive" (the state memberlist hands
		// to its leave event), so the ring rebuilt without it is the sign.
		mark := make([]int, len(survivors))
		for i, s := range survivors {
			mark[i] = len(s.log.String())
		}
		killedAt := time.Now()
		killed.Store(true)
		nodes[o].signal(syscall.SIGKILL)
		var detected time.Duration
		for detected == 0 && time.Since(killedAt) < 20*time.Second {
			gone := true
			for i, s := range survivors {
				if !ringRebuilt.MatchString(s.log.String()[mark[i]:]) {
					gone = false
				}
			}
			if gone {
				detected = time.Since(killedAt)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if detected > 0 {
			time.Sleep(time.Second) // keep loading the new owner a while
		}
		stop.Store(true)
		wg.Wait()
		if detected == 0 {
			t.Fatalf("the survivors did not rebuild their rings without the killed %s within 20 s; log of %s:\n%s", nodes[o].Name, survivors[0].Name, survivors[0].log)
		}
		if f := failures.Load(); f > 0 {
			t.Errorf("%d of %d checks failed; first: %v", f, total.Load(), firstFail.Load())
		}
		// Bound: the owner's counter dies with it (N, counting replies
		// of the owner that arrive just after the kill). Until the
		// survivors detect the crash, each decides alone with the limit
		// divided by the live nodes it sees (at least 2, so at most N/2
		// each: N together); then the new owner starts a fresh counter
		// (N). So at most 3N are allowed over the whole run.
		all := before.Load() + after.Load()
		t.Logf("owner %s killed: both survivors rebuilt their rings %v after SIGKILL; %d checks, none failed; allowed %d before the kill and %d after, %d in all (limit %d, bound %d)",
			nodes[o].Name, detected.Round(time.Millisecond), total.Load(), before.Load(), after.Load(), all, clusterLimit, 3*clusterLimit)
		if all > 3*clusterLimit {
			t.Errorf("%d allowed in all, above the bound %d", all, 3*clusterLimit)
		}
		if before.Load() > clusterLimit {
			t.Errorf("%d allowed before the kill, above the limit %d", before.Load(), clusterLimit)
		}
		if detected > 10*time.Second {
			t.Errorf("detection took %v, want the local profile's ~1 s (at most 10 s)", detected)
		}
	})
}

// TestClusterRestarts runs three processes with --data-dir: a node stopped
// with SIGTERM and started again with the same flags keeps a key's count,
// and a policy changed through the admin API survives a restart of the
// whole cluster.
func TestClusterRestarts(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"RATE_LIMIT_DEFAULT_MAX": strconv.Itoa(clusterLimit), "RATE_LIMIT_DEFAULT_WINDOW_MS": "3600000"}
	nodes := startCluster(t, 3, env, func(i int) []string {
		return []string{"--data-dir", filepath.Join(dir, "n"+strconv.Itoa(i+1))}
	})
	names := []string{"n1", "n2", "n3"}
	byName := map[string]int{"n1": 0, "n2": 1, "n3": 2}

	top := t
	t.Run("restart keeps counts", func(t *testing.T) {
		// Spend 20 of the key's 50 through every node, then SIGTERM its
		// owner (which hands the counter off) and start it again with the
		// same flags, joining the others: the key still has 30 left.
		const key, spent = "kept", 20
		for i := 0; i < spent; i++ {
			if r := check(nodes[i%3].URL, "default", key, 1); !r.Allowed {
				t.Fatalf("check %d: %+v, want allowed", i, r)
			}
		}
		o := byName[owner("default", key, names...)]
		var others []string
		for i, n := range nodes {
			if i != o {
				others = append(others, n.Gossip)
			}
		}
		nodes[o].stop()
		if r := check(nodes[(o+1)%3].URL, "default", key, 0); r.Remaining != clusterLimit-spent {
			t.Errorf("with the owner gone: remaining %d (%+v), want %d", r.Remaining, r, clusterLimit-spent)
		}
		nodes[o] = nodes[o].restart(top, "--join", strings.Join(others, ","))
		waitMembers(t, 30*time.Second, nodes...)
		for _, n := range nodes {
			if r := check(n.URL, "default", key, 0); r.Err != nil || r.Remaining != clusterLimit-spent {
				t.Errorf("after the restart, on %s: %+v, want remaining %d", n.Name, r, clusterLimit-spent)
			}
		}
		if !strings.Contains(nodes[o].log.String(), "raft state found") {
			t.Errorf("the restarted node did not find its raft state in --data-dir; log:\n%s", nodes[o].log)
		}
	})

	t.Run("policy survives a full restart", func(t *testing.T) {
		// Lower the auth limit to 3 through node 2, see it on every node,
		// stop all three, start all three: the table still says 3.
		body := []byte(`{"name":"auth","algorithm":"sliding_window","limit":3,"window_ms":900000}`)
		resp, err := adminDo("PUT", nodes[1].URL+"/v1/policies/auth", body)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT /v1/policies/auth: %d %s", resp.StatusCode, b)
		}
		waitLimit(t, nodes, "auth", 3)
		gossip := make([]string, len(nodes))
		for i, n := range nodes {
			gossip[i] = n.Gossip
		}
		for _, n := range nodes {
			n.stop()
		}
		for i, n := range nodes {
			var others []string
			for j, g := range gossip {
				if j != i {
					others = append(others, g)
				}
			}
			nodes[i] = n.restart(top, "--join", strings.Join(others, ","))
		}
		waitMembers(t, 30*time.Second, nodes...)
		waitLimit(t, nodes, "auth", 3)
		for i, n := range nodes {
			if r := check(n.URL, "auth", "after-restart-"+strconv.Itoa(i), 1); r.Err != nil || !r.Allowed || r.Remaining != 2 {
				t.Errorf("check on %s after the restart: %+v, want allowed with 2 remaining of 3", n.Name, r)
			}
		}
	})
}

// waitLimit waits until every node's table gives policy the limit.
func waitLimit(t *testing.T, nodes []*node, policy string, limit int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range nodes {
		var last string
		for {
			resp, err := adminDo("GET", n.URL+"/v1/policies/"+policy, nil)
			if err == nil {
				var p struct {
					Limit int64 `json:"limit"`
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				last = string(b)
				if json.Unmarshal(b, &p) == nil && p.Limit == limit {
					break
				}
			} else {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: policy %s never got limit %d; last answer %s", n.Name, policy, limit, last)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestProcessStandalone: a standalone node binds no cluster port, lists
// itself in /v1/cluster, and refuses --join.
func TestProcessStandalone(t *testing.T) {
	p := startServe(t, []string{"--http-addr", "127.0.0.1:0", "--standalone"}, nil)
	v, err := getCluster(p.URL)
	if err != nil || len(v.Members) != 1 || v.Members[0].HTTPAddr != p.Addr {
		t.Errorf("/v1/cluster: %+v, %v; want itself alone, with its HTTP address", v, err)
	}
	if log := p.log.String(); strings.Contains(log, "raft=") || strings.Contains(log, "no --data-dir") {
		t.Errorf("a standalone node logs cluster addresses or the data-dir warning:\n%s", log)
	}
	p.stop()

	code, _, stderr := runToEnd(t, 30*time.Second, nil, "serve", "--standalone", "--join", "127.0.0.1:1")
	if code != exitUsage || !strings.Contains(stderr, "standalone") {
		t.Errorf("--standalone --join: exit %d, stderr %q; want 2", code, stderr)
	}
}

// TestProcessClusterNoDataDir: without --data-dir a clustered node warns
// that policy changes do not survive a restart of the whole cluster.
func TestProcessClusterNoDataDir(t *testing.T) {
	n := startNode(t, "solo", nil)
	if !strings.Contains(n.log.String(), "no --data-dir") {
		t.Errorf("no warning about the in-memory policy table:\n%s", n.log)
	}
	waitMembers(t, 30*time.Second, n)
	n.stop()
}

// TestSeeds: the first --join address names the node that starts the
// cluster (cluster.Config.Bootstrap, which the library applies only
// without raft state); every node is given the --join addresses but its
// own.
func TestSeeds(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Fatal("no hostname")
	}
	log := slog.New(slog.DiscardHandler)
	cfg := serveConfig{GossipAddr: "0.0.0.0:7946", DataDir: t.TempDir(),
		Join: []string{host + ".peers.default.svc:7946", "peers.default.svc:7946"}}
	if got, boot := seeds(cfg, log); !slices.Equal(got, []string{"peers.default.svc:7946"}) || !boot {
		t.Errorf("first seed: %q, bootstrap %v; want the others, and bootstrap", got, boot)
	}
	cfg.Join = []string{"other-0.peers:7946", host + ":7946", "127.0.0.1:7000"}
	if got, boot := seeds(cfg, log); !slices.Equal(got, []string{"other-0.peers:7946", "127.0.0.1:7000"}) || boot {
		t.Errorf("not the first seed: %q, bootstrap %v; want the seeds without itself, no bootstrap", got, boot)
	}
	cfg.Join = []string{host + ":7000"} // another port: another node on this host
	if got, boot := seeds(cfg, log); !slices.Equal(got, cfg.Join) || boot {
		t.Errorf("same host, other port: %q, bootstrap %v; want it kept, no bootstrap", got, boot)
	}
}

// TestAdvertiseAddr: peers cannot dial 0.0.0.0, so serve advertises the
// gossip advertise host or an address of this host instead.
func TestAdvertiseAddr(t *testing.T) {
	if got, err := advertiseAddr("127.0.0.1:7948", "", "raft"); got != "" || err != nil {
		t.Errorf("a specific host: %q, %v; want raft's own", got, err)
	}
	if got, err := advertiseAddr("0.0.0.0:7948", "10.1.2.3:7946", "raft"); got != "10.1.2.3:7948" || err != nil {
		t.Errorf("with --gossip-advertise: %q, %v; want 10.1.2.3:7948", got, err)
	}
	if _, err := advertiseAddr("0.0.0.0:0", "", "raft"); err == nil || !strings.Contains(err.Error(), "--raft-advertise") {
		t.Errorf("every interface, port 0: %v; want an error naming --raft-advertise", err)
	}
	got, err := advertiseAddr(":7947", "", "peer")
	if err != nil {
		t.Skipf("no address to advertise on this host: %v", err)
	}
	host, port, _ := net.SplitHostPort(got)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() || ip.IsLoopback() || port != "7947" {
		t.Errorf("every interface: %q, want an address of this host at 7947", got)
	}
}

// TestClusterCopiesSurviveKill: ten keys of one node are used up; once the
// other two hold copies of their counters, the node is killed with
// SIGKILL. After the survivors rebuild their rings, every key is still
// denied: the new owners started from the copies, not from zero.
func TestClusterCopiesSurviveKill(t *testing.T) {
	const limit = 20
	env := map[string]string{"RATE_LIMIT_DEFAULT_MAX": strconv.Itoa(limit), "RATE_LIMIT_DEFAULT_WINDOW_MS": "3600000"}
	nodes := startCluster(t, 3, env, func(int) []string { return nil })
	var keys []string
	for i := 0; len(keys) < 10; i++ {
		if k := "copied-" + strconv.Itoa(i); owner("default", k, "n1", "n2", "n3") == "n3" {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		if r := check(nodes[0].URL, "default", k, limit); r.Err != nil || !r.Allowed {
			t.Fatalf("using up %s: %+v", k, r)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		copies := 0
		for _, n := range nodes[:2] {
			if v, err := getCluster(n.URL); err == nil {
				copies += v.ReplicaCounters
			}
		}
		if copies >= len(keys) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the survivors hold %d copies of %d counters after 20 s", copies, len(keys))
		}
		time.Sleep(20 * time.Millisecond)
	}
	mark := []int{len(nodes[0].log.String()), len(nodes[1].log.String())}
	nodes[2].signal(syscall.SIGKILL)
	for i, n := range nodes[:2] {
		for !ringRebuilt.MatchString(n.log.String()[mark[i]:]) {
			if time.Now().After(deadline.Add(20 * time.Second)) {
				t.Fatalf("%s did not rebuild its ring without n3; log:\n%s", n.Name, n.log)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, k := range keys {
		for _, n := range nodes[:2] {
			if r := check(n.URL, "default", k, 1); r.Err != nil || r.Allowed {
				t.Errorf("%s through %s after its owner was killed: %+v, want denied", k, n.Name, r)
			}
		}
	}
	if !strings.Contains(nodes[0].log.String()+nodes[1].log.String(), "took over counter copies") {
		t.Errorf("no survivor logged taking over the copies")
	}
}
