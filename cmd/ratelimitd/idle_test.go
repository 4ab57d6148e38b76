package main

// An idle cluster is idle: the CPU that each ratelimitd process of a
// 3-node cluster uses while no check arrives, read from /proc, and how
// fast a policy write reaches every node.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bench"
)

// plainBuild is a ratelimitd built without the race detector, which
// multiplies what every wake-up costs: the CPU of an idle node is measured
// on the binary users run.
var plainBuild struct {
	once sync.Once
	path string
	err  error
}

func plainBinary(t *testing.T) string {
	t.Helper()
	if !raceEnabled {
		return binary(t)
	}
	binary(t) // creates build.dir, removed by TestMain
	plainBuild.once.Do(func() {
		plainBuild.path = filepath.Join(build.dir, "ratelimitd-plain")
		out, err := exec.Command("go", "build", "-o", plainBuild.path, ".").CombinedOutput()
		if err != nil {
			plainBuild.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if plainBuild.err != nil {
		t.Fatal(plainBuild.err)
	}
	return plainBuild.path
}

// idleWindow is how long the test watches the idle cluster. The bound is
// per second, so 10 s tests the same thing as 30 s at a third of the time
// (the CPU time is read in 10 ms ticks: 1% of 10 s is 10 of them);
// `ratelimitd bench --spawn 3 --idle 30s` measures 30 s.
const idleWindow = 10 * time.Second

// maxIdleShare is the most of one core an idle node may use. A leader
// measures 0.3-0.4% and a follower 0.13-0.16% at load average 6-9
// (docs/benchmarks.md): the bound leaves room for a loaded machine, where
// each wake-up costs more, and still catches a loop that wakes a node a
// few dozen more times a second.
const maxIdleShare = 0.01

// TestIdleClusterCPU starts three nodes with the default timings (the lan
// gossip profile), lets them settle, and fails if any used more than
// maxIdleShare of a core over idleWindow. Then a policy written through one node must be
// visible on all three within a second.
func TestIdleClusterCPU(t *testing.T) {
	if _, err := bench.ProcessCPU(os.Getpid()); err != nil {
		t.Fatalf("this test reads /proc: %v", err)
	}
	bin := plainBinary(t)
	nodes := make([]*node, 3)
	for i := range nodes {
		name := "n" + strconv.Itoa(i+1)
		args := []string{"serve", "--node-name", name, "--http-addr", "127.0.0.1:0", "--admin-token", adminToken,
			"--gossip-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"}
		if i > 0 {
			args = append(args, "--join", nodes[0].Gossip)
		}
		p := start(t, procOptions{Args: args, Binary: bin, Env: map[string]string{"RATELIMIT_CLUSTER_KEY": testClusterKey}})
		p.waitListening(30 * time.Second)
		m := logAddr.FindStringSubmatch(p.log.String())
		if m == nil {
			t.Fatalf("%s: no cluster addresses in the listening line:\n%s", name, p.log)
		}
		nodes[i] = &node{proc: p, Name: name, Gossip: m[1], Peer: m[2], Raft: m[3]}
	}
	waitMembers(t, 30*time.Second, nodes...)
	testClient.CloseIdleConnections()
	time.Sleep(2 * time.Second) // joins, raft configuration changes, first GC

	before := make([]time.Duration, len(nodes))
	for i, n := range nodes {
		before[i] = procCPU(t, n)
	}
	start := time.Now()
	time.Sleep(idleWindow)
	window := time.Since(start)
	leader := ""
	if v, err := getCluster(nodes[0].URL); err == nil && v.Raft != nil {
		leader = v.Raft.Leader
	}
	for i, n := range nodes {
		used := procCPU(t, n) - before[i]
		share := used.Seconds() / window.Seconds()
		t.Logf("%s (leader %v): %v CPU over %v idle = %.2f%% of a core", n.Name, n.Name == leader, used, window.Round(time.Millisecond), 100*share)
		if share > maxIdleShare {
			t.Errorf("%s used %.2f%% of a core while idle, want at most %.0f%%", n.Name, 100*share, 100*maxIdleShare)
		}
	}

	// A policy written through one node is visible on all within 1 s.
	for round, via := range []*node{nodes[1], nodes[0]} {
		limit := int64(7 + round)
		body := fmt.Appendf(nil, `{"name":"auth","algorithm":"sliding_window","limit":%d,"window_ms":900000}`, limit)
		t0 := time.Now()
		resp, err := adminDo("PUT", via.URL+"/v1/policies/auth", body)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT /v1/policies/auth via %s: %d %s", via.Name, resp.StatusCode, b)
		}
		for _, n := range nodes {
			for !hasLimit(n, "auth", limit) {
				if time.Since(t0) > time.Second {
					t.Fatalf("policy written via %s not visible on %s within 1 s", via.Name, n.Name)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		t.Logf("policy written via %s visible on every node %v after the write began", via.Name, time.Since(t0).Round(time.Millisecond))
	}
}

func procCPU(t *testing.T, n *node) time.Duration {
	t.Helper()
	d, err := bench.ProcessCPU(n.cmd.Process.Pid)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	return d
}

// hasLimit reports whether n's table gives policy the limit.
func hasLimit(n *node, policy string, limit int64) bool {
	resp, err := adminDo("GET", n.URL+"/v1/policies/"+policy, nil)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var p struct {
		Limit int64 `json:"limit"`
	}
	return json.NewDecoder(resp.Body).Decode(&p) == nil && p.Limit == limit
}
