package main

// The attacks of attack_test.go on nodes with their own addresses: each
// node runs in its own network namespace, on the default ports, joined by
// a bridge; this process, the attacker, reaches them over a link of its
// own to the bridge. Network namespaces need root.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// netnsLab is a bridge in a namespace of its own, with a namespace per
// node and a link from the test's namespace; every name carries the
// test's pid, and t.Cleanup deletes them.
type netnsLab struct {
	t      *testing.T
	prefix string // 10.231.N.
	sw     string
	nodes  []string
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetnsLab builds the network for n nodes: node i (from 1) has address
// prefix+i, the test prefix+254.
func newNetnsLab(t *testing.T, n int) *netnsLab {
	pid := strconv.Itoa(os.Getpid())
	lab := &netnsLab{t: t, sw: "rl" + pid + "s"}
	routes, _ := exec.Command("ip", "-4", "route").Output()
	for x := os.Getpid() % 200; ; x++ {
		lab.prefix = "10.231." + strconv.Itoa(x%250) + "."
		if !strings.Contains(string(routes), lab.prefix) {
			break
		}
	}
	host := "rlh" + pid
	t.Cleanup(func() {
		for _, ns := range append(lab.nodes, lab.sw) {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
		_ = exec.Command("ip", "link", "del", host).Run() // gone with its peer already
	})
	ipCmd(t, "netns", "add", lab.sw)
	ipCmd(t, "-n", lab.sw, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", lab.sw, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		ns := "rl" + pid + "n" + strconv.Itoa(i)
		port := "p" + strconv.Itoa(i)
		ipCmd(t, "netns", "add", ns)
		lab.nodes = append(lab.nodes, ns)
		ipCmd(t, "-n", lab.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipCmd(t, "-n", lab.sw, "link", "set", port, "master", "br0", "up")
		ipCmd(t, "-n", ns, "addr", "add", lab.addr(i)+"/24", "dev", "eth0")
		ipCmd(t, "-n", ns, "link", "set", "eth0", "up")
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	ipCmd(t, "-n", lab.sw, "link", "add", "ph", "type", "veth", "peer", "name", host, "netns", pid)
	ipCmd(t, "-n", lab.sw, "link", "set", "ph", "master", "br0", "up")
	ipCmd(t, "addr", "add", lab.addr(254)+"/24", "dev", host)
	ipCmd(t, "link", "set", host, "up")
	return lab
}

func (l *netnsLab) addr(i int) string { return l.prefix + strconv.Itoa(i) }

// start runs `ratelimitd serve` as node i in its namespace, on the
// default ports of its own address, as the README shows for one host per
// node.
func (l *netnsLab) start(i int, dataDir string, env map[string]string, extra ...string) *node {
	t := l.t
	t.Helper()
	name := "n" + strconv.Itoa(i)
	args := append([]string{"--node-name", name, "--gossip-profile", "local", "--admin-token", adminToken,
		"--http-addr", l.addr(i) + ":8080", "--gossip-addr", l.addr(i) + ":7946", "--data-dir", dataDir}, extra...)
	p := start(t, procOptions{Args: append([]string{"serve"}, args...), Env: env, Wrap: []string{"ip", "netns", "exec", l.nodes[i-1]}})
	p.waitListening(30 * time.Second)
	m := logAddr.FindStringSubmatch(p.log.String())
	if m == nil {
		t.Fatalf("node %s: no cluster addresses in the listening line:\n%s", name, p.log)
	}
	return &node{proc: p, Name: name, Gossip: m[1], Peer: m[2], Raft: m[3], args: args, env: env}
}

// TestAttackNetns: three nodes with their own addresses, started as the
// README shows, attacked from another address without the key.
func TestAttackNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root; run as root to test nodes with their own addresses")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("running as root without the ip command (iproute2): %v", err)
	}
	lab := newNetnsLab(t, 3)
	dir := t.TempDir()
	noKey := map[string]string{"RATELIMIT_CLUSTER_KEY": ""}
	for k, v := range guardedEnv {
		noKey[k] = v
	}
	n1 := lab.start(1, dir+"/n1", noKey)
	m := joinLine.FindStringSubmatch(n1.log.String())
	if m == nil {
		t.Fatalf("the first node logged no join command line:\n%s", n1.log)
	}
	if want := lab.addr(1) + ":7946"; m[1] != want {
		t.Errorf("the join line names %s, want %s", m[1], want)
	}
	a := &attacked{key: m[2], nodes: []*node{n1}}
	for i := 2; i <= 3; i++ {
		a.nodes = append(a.nodes, lab.start(i, fmt.Sprintf("%s/n%d", dir, i), guardedEnv, "--join", m[1], "--cluster-key", m[2]))
	}
	a.prepare(t)
	runAttacks(t, a, attacker{bind: lab.addr(254), dial: net.DialTimeout, start: func(t *testing.T, name string, args ...string) *node {
		return startNode(t, name, guardedEnv, append([]string{"--gossip-addr", lab.addr(254) + ":0"}, args...)...)
	}})
}
