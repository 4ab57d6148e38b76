package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/cluster/ring"
	"github.com/vibewell/ratelimit/internal/testcluster"
)

// TestClusterRollingRestartExact restarts each of three in-process nodes
// in turn (a graceful leave, then a start under the same name and
// addresses) while 8 callers check 300 keys of limit 50 through the live
// nodes as fast as they can; afterwards every key is checked to
// exhaustion. Each key's ownership moves twice per restart of its owner
// (away, and back), with checks of it arriving at every node meanwhile.
// Asserted: every key admitted exactly its limit, no check failed.
func TestClusterRollingRestartExact(t *testing.T) {
	var logs nodeLog
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly, Logger: logs.logger(), Configure: logs.configure})
	defer logs.dump(t)
	const keys, limit, callers = 300, 50, 8
	var (
		allowed  [keys]atomic.Int64
		failed   atomic.Int64
		firstErr atomic.Value
		longest  atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for w := range callers {
		wg.Go(func() {
			for i := 0; i < 1_000_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				live := c.Live()
				n := c.Node(live[(w+i)%len(live)])
				if n == nil {
					continue
				}
				k := (w*37 + i*7) % keys
				start := time.Now()
				d, err := n.Allow(context.Background(), "small", "k"+strconv.Itoa(k), 1)
				if took := time.Since(start).Nanoseconds(); took > longest.Load() {
					longest.Store(took)
				}
				switch {
				case err != nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				case d.Allowed:
					allowed[k].Add(1)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	owners := ownerSteps{}
	owners.record(c, keys)
	for i := range 3 {
		t.Logf("%s: node %d leaves", time.Now().Format("15:04:05.000"), i)
		logs.snapshot("before node " + strconv.Itoa(i) + " leaves")
		c.Leave(i)
		c.WaitConverged()
		time.Sleep(100 * time.Millisecond)
		owners.record(c, keys)
		t.Logf("%s: node %d restarts", time.Now().Format("15:04:05.000"), i)
		c.Restart(i)
		c.WaitConverged()
		owners.record(c, keys)
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	exhaustKeys(t, c, limit, allowed[:])
	var over, under int64
	for k := range keys {
		a := allowed[k].Load()
		if a != limit {
			t.Errorf("key k%d: allowed %d, want exactly %d; owners by step %v", k, a, limit, owners[k])
			logs.also = append(logs.also, "key=k"+strconv.Itoa(k)+" ")
		}
		over += max(0, a-limit)
		under += max(0, limit-a)
	}
	t.Logf("rolling restart of 3 in-process nodes under load: %d keys of limit %d, over-admitted %d, under-admitted %d; longest check %v",
		keys, limit, over, under, time.Duration(longest.Load()).Round(time.Millisecond))
	if f := failed.Load(); f > 0 {
		t.Errorf("%d checks failed on a ready node; first: %v", f, firstErr.Load())
	}
}

// TestLeavingNodeDecidesNothing: a node that has left (Leave returned;
// it still answers checks until Close) has handed its counters to the new
// owners, so it must decide no check from its own, now empty, store. In a
// fresh cluster each time, keys the node owns are used up through it, and
// it leaves while membership flaps (a member taken for dead and back, as
// memberlist does on a starved machine), forced through test hooks:
//
//   - flap after leave: the node rebuilds its ring after the leave while
//     it still holds a peer's hand-over message from before it, which
//     names it as an owner;
//   - rebuild across leave: a rebuild has read the members (the node
//     among them) when Leave starts, and goes on only once Leave has
//     returned or has waited 2 s for it; later rebuilds wait until the
//     checks are made.
//
// Then every check of those keys, through the node that left (one by one
// and in a batch) and through the two others, must be denied, and the
// ring of the node that left must not hold it.
func TestLeavingNodeDecidesNothing(t *testing.T) {
	t.Run("flap after leave", func(t *testing.T) {
		leavingDecidesNothing(t, func(c *testcluster.Cluster, left *cluster.Node, keys []string) {
			leave(t, left)
			// The peer that now owns the first key keeps its message;
			// the other flaps (a member back in the ring is a new
			// process: its message is forgotten).
			owner := left.Owner("small", keys[0])
			flapped := c.Node(1).Name()
			if owner == flapped {
				flapped = c.Node(2).Name()
			}
			if !left.Flap(flapped, true) {
				t.Fatalf("%s did not rebuild its ring after %s flapped", left.Name(), flapped)
			}
		})
	})
	t.Run("rebuild across leave", func(t *testing.T) {
		leavingDecidesNothing(t, func(c *testcluster.Cluster, left *cluster.Node, keys []string) {
			paused, rebuilt, release, resume := left.PauseRebuild()
			defer resume()
			defer release()
			if !left.Flap(c.Node(1).Name(), false) {
				t.Fatalf("%s does not know %s", left.Name(), c.Node(1).Name())
			}
			select {
			case <-paused:
			case <-time.After(10 * time.Second):
				t.Fatal("no ring rebuild after a flap")
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				leave(t, left)
			}()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
			}
			release()
			<-done
			<-rebuilt
			// Later rebuilds (of the leave's own membership events) wait
			// until the checks are made: the tables checked are the
			// paused rebuild's and the leave's.
		})
	})
}

// TestHandoffToBehindRingKeepsCounter: a key can move between two
// members that both stay (the ring bounds each member's load, so a
// change rebalances a few partitions among the others). Here node A
// alone takes C for dead and hands a used-up key that its new ring gives
// to B; B's ring, still with C, names A as the owner and C as the key's
// successor without A. B must keep the counter (A has given it away, and
// A's hand-over message makes B decide the key): every later check of the
// key, through any node, is denied.
func TestHandoffToBehindRingKeepsCounter(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly})
	const limit = 50
	key, a, b, cc := "", -1, -1, -1
	names := []string{c.Node(0).Name(), c.Node(1).Name(), c.Node(2).Name()}
	all := ring.New(names, ring.Config{})
	var pair [3][3]*ring.Ring // the ring of two of the members
	for x := range 3 {
		for y := x + 1; y < 3; y++ {
			pair[x][y] = ring.New([]string{names[x], names[y]}, ring.Config{})
			pair[y][x] = pair[x][y]
		}
	}
	for i := 0; key == "" && i < 100_000; i++ {
		k := "moved-" + strconv.Itoa(i)
		enc, _ := bucket.Key{Policy: "small", ID: k}.AppendBinary(nil)
		x := slices.Index(names, all.Owner(enc))
		for y := range 3 {
			if z := 3 - x - y; y != x && pair[x][y].Owner(enc) == names[y] && pair[y][z].Owner(enc) == names[z] {
				key, a, b, cc = k, x, y, z
			}
		}
	}
	if key == "" {
		t.Fatal("no key moves between the two members that stay, with the third as its successor")
	}
	for j := range limit {
		if d, err := c.Node(a).Allow(context.Background(), "small", key, 1); err != nil || !d.Allowed {
			t.Fatalf("check %d of %s, of its limit %d: %+v, %v", j+1, key, limit, d, err)
		}
	}
	if !c.Node(a).SeeDead(names[cc]) {
		t.Fatalf("%s did not rebuild its ring without %s", names[a], names[cc])
	}
	if got := c.Node(a).Owner("small", key); got != names[b] {
		t.Fatalf("%s's ring gives %s to %s, want %s", names[a], key, got, names[b])
	}
	for _, i := range []int{a, b, cc} {
		for range 3 {
			d, err := c.Node(i).Allow(context.Background(), "small", key, 1)
			if err != nil {
				t.Fatalf("%s via %s: %v", key, names[i], err)
			}
			if d.Allowed {
				t.Errorf("%s, used up on %s, allowed via %s once %s handed it to %s", key, names[a], names[i], names[a], names[b])
			}
		}
	}
}

// TestJoiningMessageGivesNothingAway: a joining node's ring may be a
// partial view of its peers' (memberlist's join brings the members one at
// a time), in which a key its peer has just handed it is the peer's. Its
// hand-over message then names that ring, marked joining: the peer must
// not take it as the key handed back and decide it from nothing. Here A
// restarts; B, which held the key meanwhile, hands it to A; the key is
// used up through A; then B gets A's message naming the ring of A and B
// alone, in which the key is B's. Every later check of the key, through
// B and C, is denied.
func TestJoiningMessageGivesNothingAway(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly})
	const limit = 50
	names := []string{c.Node(0).Name(), c.Node(1).Name(), c.Node(2).Name()}
	all := ring.New(names, ring.Config{})
	bc := ring.New(names[1:], ring.Config{})
	ab := ring.New(names[:2], ring.Config{})
	key := ""
	for i := 0; key == "" && i < 100_000; i++ {
		k := "rejoin-" + strconv.Itoa(i)
		enc, _ := bucket.Key{Policy: "small", ID: k}.AppendBinary(nil)
		if all.Owner(enc) == names[0] && bc.Owner(enc) == names[1] && ab.Owner(enc) == names[1] {
			key = k
		}
	}
	if key == "" {
		t.Fatal("no key of the first node that the second holds while it is away")
	}
	c.Leave(0)
	c.WaitConverged()
	c.Restart(0)
	c.WaitConverged()
	for j := range limit {
		if d, err := c.Node(0).Allow(context.Background(), "small", key, 1); err != nil || !d.Allowed {
			t.Fatalf("check %d of %s, of its limit %d: %+v, %v", j+1, key, limit, d, err)
		}
	}
	body, err := msgpack.Marshal(map[string]any{"f": names[0], "m": names[:2], "j": true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := peerAs(t, c, names[0]).Call(ctx, c.Node(1).Addrs().Peer, "handover", body); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		for range 3 {
			d, err := c.Node(i).Allow(ctx, "small", key, 1)
			if err != nil {
				t.Fatalf("%s via %s: %v", key, names[i], err)
			}
			if d.Allowed {
				t.Errorf("%s, used up, allowed via %s after %s's joining message", key, names[i], names[0])
			}
		}
	}
}

// ownerSteps holds, for each key k0, k1, ... of policy "small", its owner
// (as testcluster.Cluster.Owner numbers nodes) at each step of a test,
// printed with a key admitted other than its limit.
type ownerSteps map[int][]int

// record appends the owner of each of keys keys now.
func (o ownerSteps) record(c *testcluster.Cluster, keys int) {
	for k := range keys {
		o[k] = append(o[k], c.Owner("small", "k"+strconv.Itoa(k)))
	}
}

// leave makes n leave the cluster (it still answers checks).
func leave(t *testing.T, n *cluster.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Leave(ctx); err != nil {
		t.Error(err)
	}
}

// leavingDecidesNothing runs a case of TestLeavingNodeDecidesNothing:
// leaveAndFlap makes node 0 leave, its 12 keys used up.
func leavingDecidesNothing(t *testing.T, leaveAndFlap func(c *testcluster.Cluster, left *cluster.Node, keys []string)) {
	c := testcluster.Start(t, 3, testcluster.Options{Policies: hourly})
	const limit = 50
	left := c.Node(0)
	var keys []string
	for i := 0; len(keys) < 12 && i < 10_000; i++ {
		if k := "left-" + strconv.Itoa(i); c.Owner("small", k) == 0 {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		for j := range limit {
			if d, err := left.Allow(context.Background(), "small", k, 1); err != nil || !d.Allowed {
				t.Fatalf("check %d of %s, of its limit %d: %+v, %v", j+1, k, limit, d, err)
			}
		}
	}
	leaveAndFlap(c, left, keys)
	if n := left.Status().RingMembers; n != 2 {
		t.Errorf("the ring of the node that left has %d members, want the 2 others", n)
	}
	var allowed []string
	for _, k := range keys {
		d, err := left.Allow(context.Background(), "small", k, 1)
		if err != nil {
			t.Fatalf("%s via the node that left: %v", k, err)
		}
		if d.Allowed {
			allowed = append(allowed, k+" (Allow, owner "+left.Owner("small", k)+")")
		}
	}
	batch := make([]cluster.Request, len(keys))
	out := make([]cluster.Result, len(keys))
	for i, k := range keys {
		batch[i] = cluster.Request{Policy: "small", Key: k, Hits: 1}
	}
	if err := left.AllowBatch(context.Background(), batch, out); err != nil {
		t.Fatal(err)
	}
	for i, r := range out {
		if r.Err != nil {
			t.Fatalf("%s via the node that left, in a batch: %v", keys[i], r.Err)
		}
		if r.Decision.Allowed {
			allowed = append(allowed, keys[i]+" (AllowBatch)")
		}
	}
	for _, i := range []int{1, 2} {
		for _, k := range keys {
			d, err := c.Node(i).Allow(context.Background(), "small", k, 1)
			if err != nil {
				t.Fatalf("%s via %s: %v", k, c.Node(i).Name(), err)
			}
			if d.Allowed {
				allowed = append(allowed, k+" (via "+c.Node(i).Name()+")")
			}
		}
	}
	if len(allowed) > 0 {
		t.Errorf("used-up keys allowed after their owner left: %d of %d checks: %v", len(allowed), 4*len(keys), allowed)
	}
}

// nodeLog collects the log lines of a test cluster's nodes; dump prints,
// when the test failed, those that tell how membership and ownership
// moved: rebuilt rings, members taken for dead or alive (memberlist's
// suspicions and refutations among them), hand-overs, late hand-overs and
// failovers.
type nodeLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
	// also holds more substrings of the lines to dump (a failing key's).
	also []string
	// regs are the nodes' metrics, one registry per node started; seen
	// holds the counters read before a node closed (closing unregisters).
	regs []*prometheus.Registry
	seen []string
}

// configure gives each node a registry of its own (testcluster's
// Options.Configure).
func (l *nodeLog) configure(i int, cfg *cluster.Config) {
	r := prometheus.NewRegistry()
	cfg.Metrics = r
	l.mu.Lock()
	defer l.mu.Unlock()
	l.regs = append(l.regs, r)
}

// snapshot records the non-zero counters that tell of a hand-over past
// its wait, counters dropped instead of merged, failovers and promoted
// copies, of every node started so far.
func (l *nodeLog) snapshot(when string) {
	l.mu.Lock()
	regs := slices.Clone(l.regs)
	l.mu.Unlock()
	var out []string
	for i, r := range regs {
		fams, _ := r.Gather()
		for _, f := range fams {
			name := f.GetName()
			if !strings.Contains(name, "handover_late") && !strings.Contains(name, "states") && !strings.Contains(name, "fallback") && !strings.Contains(name, "promoted") {
				continue
			}
			for _, m := range f.GetMetric() {
				if v := m.GetCounter().GetValue(); v > 0 {
					var labels []string
					for _, lp := range m.GetLabel() {
						labels = append(labels, lp.GetName()+"="+lp.GetValue())
					}
					out = append(out, fmt.Sprintf("%s: start %d: %s{%s} %v", when, i, name, strings.Join(labels, ","), v))
				}
			}
		}
	}
	l.mu.Lock()
	l.seen = append(l.seen, out...)
	l.mu.Unlock()
}

func (l *nodeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// logger returns a logger into l.
func (l *nodeLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// flaps returns the lines that say a live member was taken for failed:
// memberlist's suspicions and dead declarations, and refutations.
func (l *nodeLog) flaps() []string {
	return l.lines("Suspect", "Marking", "Refuting", "state=dead")
}

// lines returns the lines holding any of subs.
func (l *nodeLog) lines(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for line := range strings.Lines(l.buf.String()) {
		for _, s := range subs {
			if strings.Contains(line, s) {
				out = append(out, strings.TrimSpace(line))
				break
			}
		}
	}
	return out
}

// dump logs the lines of interest when t failed.
func (l *nodeLog) dump(t *testing.T) {
	if !t.Failed() {
		return
	}
	l.snapshot("end")
	for _, line := range l.seen {
		t.Log(line)
	}
	subs := []string{"ring rebuilt", "membership change", "Suspect", "Marking", "Refuting", "hand", "leav", "left", "failure mode", "successor", "joined", "node started", "node closed", "ForwardTimeout", "took over"}
	for _, line := range l.lines(append(subs, l.also...)...) {
		t.Log(line)
	}
}
