package cluster

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster/ring"
	"github.com/vibewell/ratelimit/cluster/topk"
	"github.com/vibewell/ratelimit/transport"
)

// Who is being limited: each node counts its denials (and shadow mode's
// would-be denials) by policy and key in topk.Recent sketches: one
// space-saving sketch per minute, 16 of them, so that the last 1 to 15
// minutes can be asked for. Keys are split by hash over deniedStripes
// stripes of Config.TopDeniedSlots/deniedStripes slots, each with its own
// lock, so that concurrent denials rarely wait for each other. Memory per
// policy that has denied anything: 16 × Config.TopDeniedSlots × (64-byte
// key + 43) bytes, about 107 KiB at the default 64 slots; keys longer than
// 64 bytes are cut. Recording a denial takes a hash, a mutex, an index
// probe and a heap step, and allocates nothing.
//
// Under a flood, past deniedExact denials of a policy in a second, a node
// counts one denial in `every` at random, with weight every, doubling
// every as the second's count grows (so that about deniedExact more are
// counted each time the second's denials double): the check path stays
// cheap, and the counts of the keys that matter then, the flood's, are
// estimates within a few percent rather than bounds (over a minute of
// flood, the seconds' sampling errors average out). Each second starts
// exact again.
const (
	deniedEpoch  = time.Minute
	deniedEpochs = 16 // 15 whole minutes back, plus the current one
	// MaxDeniedWindow is the longest window TopDenied answers for.
	MaxDeniedWindow = 15 * time.Minute
	// peerAskTimeout bounds the wait for each peer's answer to askPeers
	// (its denial summary, its counts).
	peerAskTimeout = 2 * time.Second
	// maxTopDeniedPolicy bounds the policy name of a peer's request.
	maxTopDeniedPolicy = 256
	// deniedStripes splits a policy's keys over this many sketches.
	deniedStripes = 4
	// deniedExact is the number of a policy's denials a node counts
	// exactly each second; past it, it samples.
	deniedExact = 1 << 12
)

// deniedKeys are a node's denial sketches, by policy. The map is copied
// on write, so the check path reads it without a lock.
type deniedKeys struct {
	mu       sync.Mutex
	policies atomic.Pointer[map[string]*deniedPolicy]
}

// deniedPolicy are one policy's sketches, its keys split by hash.
type deniedPolicy struct {
	seed    maphash.Seed
	stripes [deniedStripes]*topk.Recent
	// second is the Unix second that every and counted apply to; every
	// is the sampling rate, a power of 2 (1 counts every denial), and
	// counted the weighted denials counted in that second.
	second  atomic.Int64
	every   atomic.Uint64
	counted atomic.Uint64
}

func newDeniedPolicy(slots int) *deniedPolicy {
	if slots == 0 {
		slots = topk.DefaultSlots
	}
	d := &deniedPolicy{seed: maphash.MakeSeed()}
	for i := range d.stripes {
		d.stripes[i] = topk.NewRecent(topk.Config{Slots: max(1, slots/deniedStripes)}, deniedEpoch, deniedEpochs)
	}
	return d
}

// add counts a denial of key at now. Past deniedExact in a second it
// counts a random one in every: then a denial costs two atomic loads and
// a random number, and a counted one a hash, a stripe's lock and a sketch
// step.
func (d *deniedPolicy) add(key string, now time.Time) {
	sec := now.Unix()
	if d.second.Load() != sec {
		// A new second counts exactly again. Concurrent adds may race
		// here: each resets to the same state.
		d.second.Store(sec)
		d.every.Store(1)
		d.counted.Store(0)
	}
	every := max(1, d.every.Load())
	if every > 1 && rand.Uint64()&(every-1) != 0 {
		return
	}
	d.stripes[maphash.String(d.seed, key)%deniedStripes].Add(key, every, now)
	if d.counted.Add(every) >= deniedExact*every {
		d.every.CompareAndSwap(every, 2*every)
	}
}

func (d *deniedPolicy) summary(now time.Time, epochs int) topk.Summary {
	var sums [deniedStripes]topk.Summary
	for i, r := range d.stripes {
		sums[i] = r.Summary(now, epochs, 0)
	}
	return topk.Union(0, sums[:]...)
}

// recordDenied counts a denied (or shadow-denied) check of key.
func (n *Node) recordDenied(p *policyEntry, key string, d Decision, now time.Time) {
	if (d.Allowed && !d.Shadowed) || n.cfg.TopDeniedSlots < 0 {
		return
	}
	dp := p.denied.Load()
	if dp == nil {
		dp = n.deniedSketch(p.Name)
		p.denied.Store(dp)
	}
	dp.add(key, now)
}

// deniedSketch returns the sketch of policy, making it on the policy's
// first denial. Sketches of policies gone from the table are dropped
// then.
func (n *Node) deniedSketch(policy string) *deniedPolicy {
	if m := n.denied.policies.Load(); m != nil {
		if r := (*m)[policy]; r != nil {
			return r
		}
	}
	dk := &n.denied
	dk.mu.Lock()
	defer dk.mu.Unlock()
	old := map[string]*deniedPolicy{}
	if m := dk.policies.Load(); m != nil {
		old = *m
	}
	if r := old[policy]; r != nil {
		return r
	}
	table := *n.policies.Load()
	next := make(map[string]*deniedPolicy, len(old)+1)
	for name, r := range old {
		if table[name] != nil {
			next[name] = r
		}
	}
	r := newDeniedPolicy(n.cfg.TopDeniedSlots)
	next[policy] = r
	dk.policies.Store(&next)
	return r
}

// localDenied is this node's summary of policy's denials over the last
// epochs minutes.
func (n *Node) localDenied(policy string, epochs int) topk.Summary {
	if m := n.denied.policies.Load(); m != nil {
		if r := (*m)[policy]; r != nil {
			return r.summary(n.clock.Now(), epochs)
		}
	}
	return topk.Summary{Entries: []topk.Entry{}}
}

// TopDenied is the answer of Node.TopDenied.
type TopDenied struct {
	// Policy is the policy asked about.
	Policy string `json:"policy"`
	// Window is the span counted: the current minute and the whole minutes
	// before it, Window in all.
	Window time.Duration `json:"-"`
	// Keys are the most denied keys, most denied first. Each Count is at
	// least the key's true count of denials and at most Error above it.
	Keys []topk.Entry `json:"keys"`
	// Denied is the number of denials counted, all keys together.
	Denied uint64 `json:"denied"`
	// Nodes are the members whose counts are included.
	Nodes []string `json:"nodes"`
	// Missing are the members that did not answer in time, with why.
	Missing map[string]string `json:"missing,omitempty"`
}

// topDeniedRequest is the body of a methodTopDenied call.
type topDeniedRequest struct {
	Version uint8  `msgpack:"v"`
	Policy  string `msgpack:"p"`
	Epochs  int    `msgpack:"e"`
}

// methodTopDenied asks a peer for its summary of a policy's denials.
const methodTopDenied = "topdenied"

// TopDenied returns the limit keys most denied under policy, cluster-wide,
// over the last window (rounded up to whole minutes, at most
// MaxDeniedWindow): it merges this node's counts with every member's that
// answers within a couple of seconds. Members that do not answer are
// listed in Missing. Errors: ErrUnknownPolicy, ErrInvalidWindow.
func (n *Node) TopDenied(ctx context.Context, policy string, window time.Duration, limit int) (TopDenied, error) {
	if _, ok := n.Policy(policy); !ok {
		return TopDenied{}, fmt.Errorf("%w: %q", ErrUnknownPolicy, policy)
	}
	if window < time.Minute || window > MaxDeniedWindow {
		return TopDenied{}, fmt.Errorf("%w: %v, want 1m to %v", ErrInvalidWindow, window, MaxDeniedWindow)
	}
	epochs := int((window + deniedEpoch - 1) / deniedEpoch)
	out := TopDenied{Policy: policy, Window: time.Duration(epochs) * deniedEpoch, Nodes: []string{n.cfg.NodeName}}
	sums := []topk.Summary{n.localDenied(policy, epochs)}
	if rt := n.route.Load(); rt != nil && n.tr != nil {
		body, _ := msgpack.Marshal(topDeniedRequest{Version: 1, Policy: policy, Epochs: epochs})
		out.Missing = askPeers(ctx, n, rt, methodTopDenied, body, nil, func(name string, sum topk.Summary) {
			out.Nodes = append(out.Nodes, name)
			sums = append(sums, sum)
		})
		sort.Strings(out.Nodes)
	}
	m := topk.Merge(limit, sums...)
	out.Keys, out.Denied = m.Entries, m.Total
	if out.Keys == nil {
		out.Keys = []topk.Entry{}
	}
	return out, nil
}

// serveTopDenied answers a peer's methodTopDenied call with this node's
// summary.
func (n *Node) serveTopDenied(body []byte) ([]byte, error) {
	var req topDeniedRequest
	if err := msgpack.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("cluster: top denied: %w", err)
	}
	if len(req.Policy) > maxTopDeniedPolicy || req.Epochs < 1 || req.Epochs > deniedEpochs {
		return nil, fmt.Errorf("cluster: top denied: bad request (policy of %d bytes, %d epochs)", len(req.Policy), req.Epochs)
	}
	return msgpack.Marshal(n.localDenied(req.Policy, req.Epochs))
}

// KeyLocation says where a key's counter lives: the answer of
// Node.Locate.
type KeyLocation struct {
	Policy string `json:"policy"`
	Key    string `json:"key"`
	// Owner is the member that decides the key's checks.
	Owner string `json:"owner"`
	// OwnerHTTPAddr is the owner's HTTP API, if it advertised one.
	OwnerHTTPAddr string `json:"owner_http_addr,omitempty"`
	// Successor is the member that keeps a copy of the counter and takes
	// the key over if the owner fails; empty on a single node.
	Successor string `json:"successor,omitempty"`
	// Counter is the counter as its owner holds it now, read without
	// consuming (a check of 0 hits).
	Counter Decision `json:"-"`
	// CounterError says why the counter could not be read; empty on
	// success.
	CounterError string `json:"counter_error,omitempty"`
}

// Locate names the owner and the successor of key under policy, as this
// node sees the ring, and reads its counter from the owner without
// consuming anything. Errors: ErrUnknownPolicy, ErrInvalidKey.
func (n *Node) Locate(ctx context.Context, policy, key string) (KeyLocation, error) {
	p, err := n.checkInput(*n.policies.Load(), policy, key, 0)
	if err != nil {
		return KeyLocation{}, err
	}
	k := bucket.Key{Policy: policy, ID: key}
	loc := KeyLocation{Policy: policy, Key: key, Owner: n.cfg.NodeName}
	rt := n.route.Load()
	addr := ""
	if rt != nil && rt.ring.Len() > 0 {
		loc.Owner, addr = rt.owner(k)
		var others []string
		for _, m := range rt.ring.Members() {
			if m != loc.Owner {
				others = append(others, m)
			}
		}
		if len(others) > 0 {
			var buf [128]byte
			enc, _ := k.AppendBinary(buf[:0])
			loc.Successor = ring.New(others, n.cfg.Ring).Owner(enc)
		}
	}
	for _, m := range n.members() {
		if m.Name == loc.Owner {
			loc.OwnerHTTPAddr = m.HTTPAddr
		}
	}
	now := n.clock.Now()
	if !n.partitioned || loc.Owner == n.cfg.NodeName || addr == "" {
		loc.Counter, err = n.store.Take(ctx, k, p.Policy, 0, now)
	} else {
		var res transport.CheckResult
		res, err = n.tr.Check(ctx, addr, transport.CheckItem{Policy: policy, Key: key})
		if err == nil && res.Status != transport.StatusOK {
			err = fmt.Errorf("%w: %s answered %s", ErrOwnerUnavailable, loc.Owner, res.Status)
		}
		if err == nil {
			loc.Counter = fromWire(res)
		}
	}
	if err != nil {
		loc.CounterError = err.Error()
	}
	return loc, nil
}
