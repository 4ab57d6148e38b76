package main

// Fault scenarios on nodes with their own addresses: three ratelimitd
// processes, each in its own network namespace (netns_test.go), under a
// steady load sent from the test's namespace. The faults are those of
// separate hosts: a process killed, a process paused (SIGSTOP, as a long
// GC pause or a frozen VM would), a host cut off from the network (its
// link to the bridge down: packets dropped, nothing refused), a rolling
// restart and a restart of the whole cluster. Each scenario reports, per
// key, the checks allowed against the exact allowance, the checks that
// failed, and the longest check, and asserts the bounds docs/architecture.md
// states ("Faults on separate hosts"). The scenarios run in parallel, each
// in a lab of its own.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// netnsPolicies: "async" and "sync" are used up during a fault; "big" is
// not, so that its count can be compared with what was allowed.
const netnsPolicies = `policies:
  - name: async
    limit: 300
    window_ms: 3600000
  - name: sync
    limit: 300
    window_ms: 3600000
    replication: sync
  - name: big
    limit: 1000
    window_ms: 3600000
    replication: sync
`

// faultCluster is a 3-node cluster in a lab: nodes[i] is node n(i+1),
// started with the same flags as the others (all three gossip addresses
// as --join, as a deployment would).
type faultCluster struct {
	t     *testing.T
	lab   *netnsLab
	nodes []*node
}

func startFaultCluster(t *testing.T) *faultCluster {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "policies.yaml")
	if err := os.WriteFile(file, []byte(netnsPolicies), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &faultCluster{t: t, lab: newNetnsLab(t, 3)}
	join := c.lab.addr(1) + ":7946," + c.lab.addr(2) + ":7946," + c.lab.addr(3) + ":7946"
	env := map[string]string{"RATELIMIT_CLUSTER_KEY": testClusterKey}
	for i := 1; i <= 3; i++ {
		c.nodes = append(c.nodes, c.lab.start(i, filepath.Join(dir, "n"+strconv.Itoa(i)), env, "--policies", file, "--join", join))
	}
	waitMembers(t, 60*time.Second, c.nodes...)
	return c
}

// keyOf returns a key of policy that node n3 owns in the 3-node ring.
func keyOf(policy string) string {
	for i := 0; ; i++ {
		if k := policy + "-" + strconv.Itoa(i); owner(policy, k, "n1", "n2", "n3") == "n3" {
			return k
		}
	}
}

// faultLoad sends checks at a steady pace, round-robin over its keys and
// over the URLs targets returns, at most perKey per key, from at most
// loadWorkers checks in flight.
type faultLoad struct {
	keys     [][2]string // policy, key
	perKey   int64
	interval time.Duration // between two checks, all keys together
	targets  func() []string
	// client waits longer than any bound the scenarios assert, so that a
	// slow check is measured, not cut short; its connections are closed
	// when the load ends.
	client *http.Client

	stop    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
	started []atomic.Int64
	stats   []keyStats
	longest atomic.Int64
	first   atomic.Value
	phase   atomic.Int32 // phaseBefore, phaseFault, phaseAfter
}

// The phases of a scenario: before the fault, from its start to its end
// (SIGCONT, the link up again), and after: the owner rejoins then.
const (
	phaseBefore = iota
	phaseFault
	phaseAfter
)

type keyStats struct {
	sent, allowed, failed atomic.Int64
	inFlight              atomic.Int64
	byPhase               [3]atomic.Int64 // allowed, by the phase a check was sent in
	inFlightAtFault       int64
}

const loadWorkers = 64

func newFaultLoad(perKey int64, perSecond int, targets func() []string, keys ...[2]string) *faultLoad {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: loadWorkers}}
	return &faultLoad{client: client, keys: keys, perKey: perKey, interval: time.Second / time.Duration(perSecond), targets: targets,
		stop: make(chan struct{}), done: make(chan struct{}), started: make([]atomic.Int64, len(keys)), stats: make([]keyStats, len(keys))}
}

func (l *faultLoad) start() {
	go func() {
		defer close(l.done)
		defer l.client.CloseIdleConnections()
		slots := make(chan struct{}, loadWorkers)
		tick := time.NewTicker(l.interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				l.wg.Wait()
				return
			case <-tick.C:
			}
			ki := i % len(l.keys)
			if l.started[ki].Load() >= l.perKey {
				finished := true
				for j := range l.keys {
					finished = finished && l.started[j].Load() >= l.perKey
				}
				if finished {
					l.wg.Wait()
					return
				}
				continue
			}
			urls := l.targets()
			if len(urls) == 0 {
				continue // no node is up: nothing to send to
			}
			select {
			case slots <- struct{}{}:
			case <-l.stop:
				l.wg.Wait()
				return
			}
			n := l.started[ki].Add(1)
			l.wg.Go(func() {
				defer func() { <-slots }()
				l.one(ki, urls[int(n)%len(urls)])
			})
		}
	}()
}

func (l *faultLoad) one(ki int, url string) {
	s := &l.stats[ki]
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	phase := l.phase.Load()
	body, _ := json.Marshal(map[string]any{"policy": l.keys[ki][0], "key": l.keys[ki][1], "hits": 1})
	t0 := time.Now()
	resp, err := l.client.Post(url+"/v1/check", "application/json", bytes.NewReader(body))
	var status int
	if err == nil {
		status = resp.StatusCode
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if d := time.Since(t0).Nanoseconds(); d > l.longest.Load() {
		l.longest.Store(d) // racy max: a report, off by one check at worst
	}
	s.sent.Add(1)
	switch {
	case err != nil || (status != http.StatusOK && status != http.StatusTooManyRequests):
		s.failed.Add(1)
		l.first.CompareAndSwap(nil, fmt.Sprintf("%s via %s: status %d, err %v", l.keys[ki][0], url, status, err))
	case status == http.StatusOK:
		s.allowed.Add(1)
		s.byPhase[phase].Add(1)
	}
}

// markFault notes that the fault begins, and the checks in flight.
func (l *faultLoad) markFault() {
	l.phase.Store(phaseFault)
	for i := range l.stats {
		l.stats[i].inFlightAtFault = l.stats[i].inFlight.Load()
	}
}

// markRecovered notes that the fault ended.
func (l *faultLoad) markRecovered() { l.phase.Store(phaseAfter) }

// waitSent waits until every key has had n checks sent.
func (l *faultLoad) waitSent(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for i := range l.keys {
		for l.stats[i].sent.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("the load sent %d checks of %s in 60 s, want %d", l.stats[i].sent.Load(), l.keys[i][0], n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// finish waits for the load to send everything (or stops it at timeout).
func (l *faultLoad) finish(timeout time.Duration) {
	select {
	case <-l.done:
	case <-time.After(timeout):
		close(l.stop)
		<-l.done
	}
}

// report logs each key's figures and returns the longest check.
func (l *faultLoad) report(t *testing.T, scenario string, exact func(policy string) int64) time.Duration {
	t.Helper()
	longest := time.Duration(l.longest.Load())
	for i, k := range l.keys {
		s := &l.stats[i]
		t.Logf("%s: %s: %d checks, %d allowed (%d before the fault, %d during it, %d after it), exact allowance %d, %d failed; longest check (all keys) %v",
			scenario, k[0], s.sent.Load(), s.allowed.Load(), s.byPhase[0].Load(), s.byPhase[1].Load(), s.byPhase[2].Load(),
			exact(k[0]), s.failed.Load(), longest.Round(time.Millisecond))
	}
	failed := int64(0)
	for i := range l.stats {
		failed += l.stats[i].failed.Load()
	}
	if failed > 0 {
		t.Errorf("%s: %d checks failed; first: %v", scenario, failed, l.first.Load())
	}
	return longest
}

func (l *faultLoad) allowed(policy string) int64 {
	for i, k := range l.keys {
		if k[0] == policy {
			return l.stats[i].allowed.Load()
		}
	}
	return -1
}

// sent returns the checks of policy sent.
func (l *faultLoad) sent(policy string) int64 {
	for i, k := range l.keys {
		if k[0] == policy {
			return l.stats[i].sent.Load()
		}
	}
	return -1
}

// allowedBefore returns the checks of policy allowed until the fault
// ended.
func (l *faultLoad) allowedBefore(policy string) int64 {
	for i, k := range l.keys {
		if k[0] == policy {
			return l.stats[i].byPhase[0].Load() + l.stats[i].byPhase[1].Load()
		}
	}
	return -1
}

func (l *faultLoad) inFlightAtFault(policy string) int64 {
	for i, k := range l.keys {
		if k[0] == policy {
			return l.stats[i].inFlightAtFault
		}
	}
	return 0
}

// logWarnings logs the warnings of every node once the test failed: what
// the nodes saw of a fault is the first thing to read.
func (c *faultCluster) logWarnings(t *testing.T) {
	t.Helper()
	if !t.Failed() {
		return
	}
	for _, n := range c.nodes {
		lines := 0
		for _, line := range strings.Split(n.log.String(), "\n") {
			if strings.Contains(line, "level=WARN") && !strings.Contains(line, "component=raft") && lines < 40 {
				t.Logf("%s: %.300s", n.Name, line)
				lines++
			}
		}
	}
}

// urls returns the HTTP URLs of the nodes at idx.
func (c *faultCluster) urls(idx ...int) func() []string {
	var out []string
	for _, i := range idx {
		out = append(out, c.nodes[i].URL)
	}
	return func() []string { return out }
}

// assertFailover asserts the bounds of a key used up while its owner is
// unreachable, on the checks allowed until the fault ended (all, if it
// does not end): "sync" at most its limit, "async" at most the limit
// and 1% (the hits of the last round of copies), and neither fewer than
// the limit less the checks in flight when the fault began (the owner
// counted them, its answers lost), with those other allowed (the cut-off
// node's own client, whose hits its counter brings back after the heal,
// less those it counted but denied by the failure mode).
// Over the whole run, the checks a
// returning owner admits on its own counter before the counter of the
// node that decided for it arrives are bounded by rejoinSlack.
func assertFailover(t *testing.T, load, other *faultLoad, limit int64) {
	t.Helper()
	for _, p := range []string{"async", "sync"} {
		a, all := load.allowedBefore(p), load.allowed(p)
		both, denied := all, int64(0)
		if other != nil {
			both += other.allowed(p)
			denied = other.sent(p) - other.allowed(p)
		}
		hi := limit
		if p == "async" {
			hi = limit + limit/100
		}
		if a > hi {
			t.Errorf("%s: %d allowed until the fault ended, above the bound %d (limit %d)", p, a, hi, limit)
		}
		if lo := limit - load.inFlightAtFault(p) - denied; both < lo {
			t.Errorf("%s: %d allowed, below the limit %d less the %d checks in flight at the fault and the %d the cut-off node counted but denied", p, both, limit, load.inFlightAtFault(p), denied)
		}
		if all > hi+rejoinSlack(limit) {
			t.Errorf("%s: %d allowed in all, above the bound %d and the rejoin slack %d", p, all, hi, rejoinSlack(limit))
		}
	}
}

// rejoinSlack is what an owner that rejoins after a pause or a cut may
// admit on its own, stale counter in the moment before the counter of the
// node that decided for it arrives (measured: 11 and 12 at 40 checks/s of
// a key, limit 300). It is a bound of the hand-over of a ring change, not
// of fail-over: 10% of the limit.
func rejoinSlack(limit int64) int64 { return limit / 10 }

// peekAll returns the remaining count of policy/key as each node answers
// a peek (hits 0).
func (c *faultCluster) peekAll(t *testing.T, policy, key string) []int64 {
	t.Helper()
	var out []int64
	for _, n := range c.nodes {
		r := check(n.URL, policy, key, 0)
		if r.Err != nil || (r.Status != http.StatusOK && r.Status != http.StatusTooManyRequests) {
			t.Fatalf("peek of %s through %s: %+v", policy, n.Name, r)
		}
		out = append(out, r.Remaining)
	}
	return out
}

// waitAgree waits until every node answers the same remaining count for
// policy/key, and returns it.
func (c *faultCluster) waitAgree(t *testing.T, policy, key string) int64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := c.peekAll(t, policy, key)
		if r[0] == r[1] && r[1] == r[2] {
			return r[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the nodes still answer different remaining counts %v", policy, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// putPolicy writes a policy through url, retrying for up to timeout while
// no raft leader can commit it.
func putPolicy(t *testing.T, url, name string, limit int64, timeout time.Duration) {
	t.Helper()
	body := []byte(fmt.Sprintf(`{"name":%q,"algorithm":"sliding_window","limit":%d,"window_ms":3600000}`, name, limit))
	deadline := time.Now().Add(timeout)
	for {
		resp, err := adminDo("PUT", url+"/v1/policies/"+name, body)
		var b []byte
		if err == nil {
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("PUT /v1/policies/%s through %s: %v %s", name, url, err, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestFaultsNetns runs the fault scenarios, in parallel, each on a
// 3-node cluster of its own whose nodes have their own addresses.
func TestFaultsNetns(t *testing.T) {
	requireNetns(t)
	binary(t) // built once, before the scenarios start in parallel
	t.Run("kill", func(t *testing.T) { t.Parallel(); faultKill(t) })
	t.Run("pause", func(t *testing.T) { t.Parallel(); faultPause(t) })
	t.Run("cut", func(t *testing.T) { t.Parallel(); faultCut(t) })
	t.Run("rolling-restart", func(t *testing.T) { t.Parallel(); faultRolling(t) })
	t.Run("full-restart", func(t *testing.T) { t.Parallel(); faultFullRestart(t) })
}

const (
	faultLimit = 300
	faultRate  = 80 // checks per second over the two keys
)

func limitOf(p string) int64 {
	if p == "big" {
		return 1000
	}
	return faultLimit
}

// faultKill: the owner of both keys is SIGKILLed after 100 checks of
// each; its peers' connections are refused at once, so the successor
// decides against its copy without a wait, and owns the keys once the
// ring drops the owner.
func faultKill(t *testing.T) {
	c := startFaultCluster(t)
	defer c.logWarnings(t)
	load := newFaultLoad(2*faultLimit, faultRate, c.urls(0, 1), [2]string{"async", keyOf("async")}, [2]string{"sync", keyOf("sync")})
	load.start()
	load.waitSent(t, 100)
	load.markFault()
	c.nodes[2].signal(syscall.SIGKILL)
	load.finish(60 * time.Second)
	longest := load.report(t, "owner SIGKILL", limitOf)
	assertFailover(t, load, nil, faultLimit)
	if longest > 5*time.Second {
		t.Errorf("longest check %v: a refused owner is failed over at once (bound 5 s)", longest)
	}
}

// faultPause: the owner is stopped (SIGSTOP) for 10 s, then continued.
// Its peers' connections stand and nothing is refused: a check waits for
// the owner until membership drops it from the ring, or at most the
// 10 s FailoverTimeout, then goes to the successor. After SIGCONT the
// owner rejoins, and every node agrees on the (used-up) counts.
func faultPause(t *testing.T) {
	c := startFaultCluster(t)
	defer c.logWarnings(t)
	load := newFaultLoad(700, faultRate, c.urls(0, 1), [2]string{"async", keyOf("async")}, [2]string{"sync", keyOf("sync")})
	load.start()
	load.waitSent(t, 100)
	load.markFault()
	c.nodes[2].signal(syscall.SIGSTOP)
	time.Sleep(10 * time.Second)
	c.nodes[2].signal(syscall.SIGCONT)
	load.markRecovered()
	contAt := time.Now()
	waitMembers(t, 60*time.Second, c.nodes...)
	t.Logf("owner SIGSTOP 10 s: all three members again %v after SIGCONT", time.Since(contAt).Round(time.Millisecond))
	load.finish(60 * time.Second)
	longest := load.report(t, "owner SIGSTOP 10 s", limitOf)
	assertFailover(t, load, nil, faultLimit)
	if bound := 10*time.Second + 3*time.Second; longest > bound {
		t.Errorf("longest check %v, above the FailoverTimeout (10 s) and one fail-over round (bound %v)", longest, bound)
	}
	waitMembers(t, 60*time.Second, c.nodes...)
	for _, p := range []string{"async", "sync"} {
		if r := c.waitAgree(t, p, keyOf(p)); r != 0 {
			t.Errorf("%s: after the pause the nodes answer %d remaining, want 0 (used up)", p, r)
		}
	}
}

// faultCut: the owner's link to the bridge is taken down for 10 s, then
// up again. The majority side's clients go on through n1 and n2; a client
// of the cut-off node (on its own host) goes on through n3, over a link
// of its own. A policy written before the cut and one written during it
// (through a node on the majority side) are on every node afterwards; the
// used-up keys keep their bounds, with what the cut-off node admits to
// its own client stated and bounded; "big", not used up, ends with a count
// that every node agrees on, holding every allowed hit.
func faultCut(t *testing.T) {
	c := startFaultCluster(t)
	defer c.logWarnings(t)
	c.lab.direct(3)
	putPolicy(t, c.nodes[0].URL, "before-cut", 7, 20*time.Second)
	waitLimit(t, c.nodes, "before-cut", 7)
	keys := [][2]string{{"async", keyOf("async")}, {"sync", keyOf("sync")}}
	load := newFaultLoad(700, 3*faultRate/2, c.urls(0, 1), append(keys, [2]string{"big", keyOf("big")})...)
	load.start()
	load.waitSent(t, 100)
	load.markFault()
	cutAt := time.Now()
	c.lab.cut(3)
	// The cut-off node's own client: 20 checks/s of each used-up key.
	isolated := newFaultLoad(1000, 40, c.urls(2), keys...)
	isolated.start()
	putPolicy(t, c.nodes[0].URL, "during-cut", 9, 10*time.Second)
	time.Sleep(10*time.Second - time.Since(cutAt))
	close(isolated.stop)
	<-isolated.done
	c.lab.heal(3)
	load.markRecovered()
	healedAt := time.Now()
	waitMembers(t, 60*time.Second, c.nodes...)
	t.Logf("owner cut off 10 s: all three members again %v after the link came back", time.Since(healedAt).Round(time.Millisecond))
	load.finish(60 * time.Second)
	longest := load.report(t, "owner cut off 10 s, majority side", limitOf)
	isolated.report(t, "owner cut off 10 s, its own client", limitOf)
	assertFailover(t, load, isolated, faultLimit)
	for _, k := range keys {
		maj, iso := load.allowed(k[0]), isolated.allowed(k[0])
		t.Logf("owner cut off 10 s: %s: %d allowed on the majority side and %d by the cut-off node, %d in all (limit %d)", k[0], maj, iso, maj+iso, faultLimit)
		// The cut-off node answers allowed on its counter alone only
		// until its copies are known not to arrive: at once for "sync",
		// after a failed round of copies (at most replicaTimeout, 2 s,
		// again after each change of its ring: at most three rounds in
		// all) for "async"; then the failure mode decides, `local`: a
		// third of the limit.
		share := int64(faultLimit / 3)
		bound := share
		if k[0] == "async" {
			bound += 20 * 6 // its client's 20 checks/s, for three rounds of 2 s
		}
		if iso > bound {
			t.Errorf("%s: the cut-off node allowed its own client %d checks, above the bound %d", k[0], iso, bound)
		}
	}
	if bound := 10*time.Second + 3*time.Second; longest > bound {
		t.Errorf("longest check %v, above the FailoverTimeout (10 s) and one fail-over round (bound %v)", longest, bound)
	}
	waitLimit(t, c.nodes, "before-cut", 7)
	waitLimit(t, c.nodes, "during-cut", 9)
	for _, p := range []string{"async", "sync"} {
		if r := c.waitAgree(t, p, keyOf(p)); r != 0 {
			t.Errorf("%s: after the cut the nodes answer %d remaining, want 0 (used up)", p, r)
		}
	}
	a := load.allowed("big")
	counted := 1000 - c.waitAgree(t, "big", keyOf("big"))
	t.Logf("owner cut off 10 s: big: %d allowed, %d counted after the heal (checks in flight at the cut: %d)", a, counted, load.inFlightAtFault("big"))
	// Every allowed hit is counted (less the rejoin slack). More can be:
	// a check whose forward reached the cut-off owner's socket before its
	// caller gave up on it is decided again by the successor, and the
	// owner counts it too when the link is back. So at most the checks
	// sent during the cut more. (Before the successor forgot the hits it
	// had taken for the owner once it took the key over, the fold-back
	// added them a second time: 234 more for 150 sent during the cut.)
	during := load.stats[2].byPhase[1].Load() // big is never denied: sent = allowed
	if counted < a-rejoinSlack(1000) || counted > a+during {
		t.Errorf("big: %d counted after the heal, want the %d allowed (less the rejoin slack %d) and at most the %d checks sent during the cut more", counted, a, rejoinSlack(1000), during)
	}
}

// faultRolling: 600 of 1000 used, then each node in turn is stopped with
// SIGTERM and started again with the same flags, under 50 checks/s; then
// the key is checked to exhaustion. Asserted: exactly the 400 left
// allowed, before and after the restarts together, no check failed, and
// every node agrees on the count.
func faultRolling(t *testing.T) {
	c := startFaultCluster(t)
	defer c.logWarnings(t)
	keys := [][2]string{{"big", keyOf("big")}}
	const used = 600
	if r := check(c.nodes[0].URL, "big", keys[0][1], used); !r.Allowed {
		t.Fatalf("using %d: %+v", used, r)
	}
	var mu sync.Mutex
	up := []string{c.nodes[0].URL, c.nodes[1].URL, c.nodes[2].URL}
	targets := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), up...)
	}
	load := newFaultLoad(1000, 50, targets, keys...)
	load.start()
	load.markFault()
	for _, i := range []int{2, 1, 0} {
		url := c.nodes[i].URL
		mu.Lock()
		up = strings.Fields(strings.ReplaceAll(strings.Join(up, " "), url, ""))
		mu.Unlock()
		time.Sleep(100 * time.Millisecond)
		c.nodes[i].stop()
		c.nodes[i] = c.lab.restart(i+1, c.nodes[i])
		waitMembers(t, 60*time.Second, c.nodes...)
		mu.Lock()
		up = append(up, url)
		mu.Unlock()
	}
	time.Sleep(time.Second)
	close(load.stop)
	<-load.done
	load.report(t, "rolling restart", func(string) int64 { return 1000 - used })
	a := load.allowed("big")
	counted := 1000 - c.waitAgree(t, "big", keys[0][1])
	t.Logf("rolling restart: big: %d allowed of the %d left, %d counted after (%d before)", a, 1000-used, counted, used)
	if counted < min(1000, used+a) {
		t.Errorf("big: %d counted after the restart, fewer than the %d used and allowed", counted, min(1000, used+a))
	}
	// What the load left of the allowance, checked to exhaustion.
	const left = 1000 - used
	rest := int64(0)
	for j := 0; j < 2*left; j++ {
		r := check(c.nodes[j%3].URL, "big", keys[0][1], 1)
		if r.Err != nil || (r.Status != 200 && r.Status != 429) {
			t.Fatalf("exhausting big: %+v", r)
		}
		if !r.Allowed {
			break
		}
		rest++
	}
	t.Logf("rolling restart: big: %d allowed during the restarts, %d after, of the %d left", a, rest, left)
	if a+rest != left {
		t.Errorf("big: %d allowed (%d during the restarts, %d after), want exactly the %d left", a+rest, a, rest, left)
	}
}

// faultFullRestart: a policy written through the admin API survives a
// restart of every node (from the raft state in --data-dir); checks go on
// before and after, with no error from a node that is up. Counters live
// in memory: a key's count does not survive.
func faultFullRestart(t *testing.T) {
	c := startFaultCluster(t)
	defer c.logWarnings(t)
	putPolicy(t, c.nodes[1].URL, "written", 11, 20*time.Second)
	waitLimit(t, c.nodes, "written", 11)
	var mu sync.Mutex
	var up []string
	setUp := func(on bool) {
		mu.Lock()
		defer mu.Unlock()
		up = nil
		if on {
			for _, n := range c.nodes {
				up = append(up, n.URL)
			}
		}
	}
	setUp(true)
	targets := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), up...)
	}
	key := keyOf("big")
	load := newFaultLoad(2000, 50, targets, [2]string{"big", key})
	load.start()
	load.waitSent(t, 50)
	setUp(false)
	time.Sleep(100 * time.Millisecond)
	before := load.allowed("big")
	for _, n := range c.nodes {
		n.signal(syscall.SIGTERM)
	}
	for _, n := range c.nodes {
		if code := n.wait(20 * time.Second); code != 0 {
			t.Fatalf("%s: exit code %d after SIGTERM; log:\n%s", n.Name, code, n.log)
		}
	}
	load.markFault()
	for i := range c.nodes {
		c.nodes[i] = c.lab.restart(i+1, c.nodes[i])
	}
	waitMembers(t, 60*time.Second, c.nodes...)
	waitLimit(t, c.nodes, "written", 11)
	setUp(true)
	time.Sleep(2 * time.Second)
	close(load.stop)
	<-load.done
	load.report(t, "whole-cluster restart", limitOf)
	after := load.allowed("big") - before
	counted := 1000 - c.waitAgree(t, "big", key)
	t.Logf("whole-cluster restart: big: %d allowed before, %d after; %d counted after the restart", before, after, counted)
	if counted != after {
		t.Errorf("big: %d counted after the restart, want the %d allowed since (counts start again from zero)", counted, after)
	}
	for i, n := range c.nodes {
		if r := check(n.URL, "written", "after-"+strconv.Itoa(i), 1); r.Err != nil || !r.Allowed || r.Remaining != 10 {
			t.Errorf("a check of the written policy through %s after the restart: %+v, want allowed with 10 of 11 left", n.Name, r)
		}
	}
}
