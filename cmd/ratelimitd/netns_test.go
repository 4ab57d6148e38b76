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
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// netnsLab is a bridge in a namespace of its own, with a namespace per
// node and a link from the test's namespace. Every name carries the test
// process's pid and a sequence number, so labs of parallel tests (and of
// parallel test processes) do not meet; t.Cleanup deletes them, and a lab
// left by a process that died (a test binary killed at its timeout) is
// deleted by the next one.
type netnsLab struct {
	t      *testing.T
	prefix string // 10.231.N.
	sw     string
	host   string // the test's end of its link to the bridge
	nodes  []string
}

// labs serialises the choice of a lab's subnet and numbers the labs.
var labs struct {
	mu  sync.Mutex
	seq int
}

// labName matches the names of this file's namespaces and links:
// "rl", the pid, a letter, the lab's sequence number, and the rest.
var labName = regexp.MustCompile(`^rl[hd]?([0-9]+)[a-z]`)

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// requireNetns fails the test unless it can build network namespaces:
// root and the ip command. Without root the test fails too, naming the
// variable RATELIMIT_TEST_NO_NETNS=1 that turns the failure into a skip,
// so that a run that cannot exercise separate hosts never passes for one
// that did.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("RATELIMIT_TEST_NO_NETNS") == "1" {
			t.Skip("RATELIMIT_TEST_NO_NETNS=1: not testing nodes in network namespaces (they need root)")
		}
		t.Fatal("nodes with their own addresses run in network namespaces, which need root; run as root, or set RATELIMIT_TEST_NO_NETNS=1 to skip them")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("running as root without the ip command (iproute2): %v", err)
	}
}

// sweepLabs deletes the namespaces and links of labs whose process is
// gone.
func sweepLabs() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	gone := func(name string) bool {
		m := labName.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		return pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && gone(f[0]) {
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
	for _, line := range strings.Split(string(links), "\n") {
		// "7: rlh123a1@if6: <...>"
		if f := strings.Fields(line); len(f) > 1 {
			if name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@"); gone(name) {
				_ = exec.Command("ip", "link", "del", name).Run()
			}
		}
	}
}

// newNetnsLab builds the network for n nodes: node i (from 1) has address
// prefix+i, the test prefix+254.
func newNetnsLab(t *testing.T, n int) *netnsLab {
	labs.mu.Lock()
	defer labs.mu.Unlock()
	if labs.seq == 0 {
		sweepLabs()
	}
	labs.seq++
	pid := strconv.Itoa(os.Getpid())
	id := pid + "l" + strconv.Itoa(labs.seq)
	lab := &netnsLab{t: t, sw: "rl" + id + "s", host: "rlh" + id}
	routes, _ := exec.Command("ip", "-4", "addr").Output()
	for x := (os.Getpid() + labs.seq) % 200; ; x++ {
		lab.prefix = "10.231." + strconv.Itoa(x%250) + "."
		if !strings.Contains(string(routes), lab.prefix) && !strings.Contains(string(routes), strings.Replace(lab.prefix, ".231.", ".232.", 1)) {
			break
		}
	}
	t.Cleanup(func() {
		// A namespace deleted says nothing to the sockets that reached
		// into it: keep-alive connections to its nodes would wait forever.
		testClient.CloseIdleConnections()
		for _, ns := range append(lab.nodes, lab.sw) {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
		_ = exec.Command("ip", "link", "del", lab.host).Run() // gone with its peer already
	})
	ipCmd(t, "netns", "add", lab.sw)
	ipCmd(t, "-n", lab.sw, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", lab.sw, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		ns := "rl" + id + "n" + strconv.Itoa(i)
		port := "p" + strconv.Itoa(i)
		ipCmd(t, "netns", "add", ns)
		lab.nodes = append(lab.nodes, ns)
		ipCmd(t, "-n", lab.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipCmd(t, "-n", lab.sw, "link", "set", port, "master", "br0", "up")
		ipCmd(t, "-n", ns, "addr", "add", lab.addr(i)+"/24", "dev", "eth0")
		ipCmd(t, "-n", ns, "link", "set", "eth0", "up")
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	ipCmd(t, "-n", lab.sw, "link", "add", "ph", "type", "veth", "peer", "name", lab.host, "netns", pid)
	ipCmd(t, "-n", lab.sw, "link", "set", "ph", "master", "br0", "up")
	ipCmd(t, "addr", "add", lab.addr(254)+"/24", "dev", lab.host)
	ipCmd(t, "link", "set", lab.host, "up")
	return lab
}

func (l *netnsLab) addr(i int) string { return l.prefix + strconv.Itoa(i) }

// cut takes node i's port on the bridge down: the node is cut off from
// every other node and from the test, its process and its sockets
// untouched (packets are dropped, nothing is refused). heal puts it back.
func (l *netnsLab) cut(i int)  { ipCmd(l.t, "-n", l.sw, "link", "set", "p"+strconv.Itoa(i), "down") }
func (l *netnsLab) heal(i int) { ipCmd(l.t, "-n", l.sw, "link", "set", "p"+strconv.Itoa(i), "up") }

// direct links the test's namespace to node i's by a veth of their own,
// outside the bridge, and routes the node's address over it: the test
// then reaches the node while cut takes it off the bridge, as a client on
// the node's own host (or its side of a partition) would. The link is
// 10.232.N.0/24 (N of the lab's prefix), the node .i, the test .254.
func (l *netnsLab) direct(i int) {
	t := l.t
	t.Helper()
	sub := strings.Replace(l.prefix, ".231.", ".232.", 1)
	link := strings.Replace(l.host, "rlh", "rld", 1) + "n" + strconv.Itoa(i)
	ipCmd(t, "link", "add", link, "type", "veth", "peer", "name", "eth1", "netns", l.nodes[i-1])
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", link).Run() })
	ipCmd(t, "addr", "add", sub+"254/24", "dev", link)
	ipCmd(t, "link", "set", link, "up")
	ipCmd(t, "-n", l.nodes[i-1], "addr", "add", sub+strconv.Itoa(i)+"/24", "dev", "eth1")
	ipCmd(t, "-n", l.nodes[i-1], "link", "set", "eth1", "up")
	ipCmd(t, "route", "add", l.addr(i)+"/32", "dev", link, "src", sub+"254")
}

// start runs `ratelimitd serve` as node i in its namespace, on the
// default ports of its own address, as the README shows for one host per
// node, with the LAN gossip timings.
func (l *netnsLab) start(i int, dataDir string, env map[string]string, extra ...string) *node {
	t := l.t
	t.Helper()
	name := "n" + strconv.Itoa(i)
	args := append([]string{"--node-name", name, "--gossip-profile", "lan", "--admin-token", adminToken,
		"--http-addr", l.addr(i) + ":8080", "--gossip-addr", l.addr(i) + ":7946", "--data-dir", dataDir}, extra...)
	return l.run(i, args, env)
}

// run starts node i's process with args in its namespace and waits for
// its listening line.
func (l *netnsLab) run(i int, args []string, env map[string]string) *node {
	t := l.t
	t.Helper()
	p := start(t, procOptions{Args: append([]string{"serve"}, args...), Env: env, Wrap: []string{"ip", "netns", "exec", l.nodes[i-1]}})
	p.waitListening(60 * time.Second)
	m := logAddr.FindStringSubmatch(p.log.String())
	if m == nil {
		t.Fatalf("node n%d: no cluster addresses in the listening line:\n%s", i, p.log)
	}
	return &node{proc: p, Name: "n" + strconv.Itoa(i), Gossip: m[1], Peer: m[2], Raft: m[3], args: args, env: env}
}

// restart starts node i again with the flags it last ran with.
func (l *netnsLab) restart(i int, n *node) *node {
	l.t.Helper()
	return l.run(i, n.args, n.env)
}

// TestAttackNetns: three nodes with their own addresses, started as the
// README shows, attacked from another address without the key.
func TestAttackNetns(t *testing.T) {
	requireNetns(t)
	lab := newNetnsLab(t, 3)
	dir := t.TempDir()
	noKey := map[string]string{"RATELIMIT_CLUSTER_KEY": ""}
	for k, v := range guardedEnv {
		noKey[k] = v
	}
	n1 := lab.start(1, dir+"/n1", noKey, "--forward-timeout", "2s")
	m := joinLine.FindStringSubmatch(n1.log.String())
	if m == nil {
		t.Fatalf("the first node logged no join command line:\n%s", n1.log)
	}
	if want := lab.addr(1) + ":7946"; m[1] != want {
		t.Errorf("the join line names %s, want %s", m[1], want)
	}
	a := &attacked{key: m[2], nodes: []*node{n1}}
	for i := 2; i <= 3; i++ {
		a.nodes = append(a.nodes, lab.start(i, fmt.Sprintf("%s/n%d", dir, i), guardedEnv, "--forward-timeout", "2s", "--join", m[1], "--cluster-key", m[2]))
	}
	a.prepare(t)
	runAttacks(t, a, attacker{bind: lab.addr(254), dial: net.DialTimeout, start: func(t *testing.T, name string, args ...string) *node {
		return startNode(t, name, guardedEnv, append([]string{"--gossip-addr", lab.addr(254) + ":0"}, args...)...)
	}})
}
