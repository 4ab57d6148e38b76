package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster/ring"
	"github.com/vibewell/ratelimit/transport"
)

// Member is a node of the cluster as this node sees it.
type Member struct {
	Name       string `json:"name"`                // the node's name, unique in the cluster
	GossipAddr string `json:"gossip_addr"`         // where it gossips
	PeerAddr   string `json:"peer_addr"`           // where it takes forwarded checks
	HTTPAddr   string `json:"http_addr,omitempty"` // its HTTP API, if it advertised one
	// State is "alive", "suspect", "left" or "dead".
	State string `json:"state"`
	// Self marks the node that answered.
	Self bool `json:"self,omitempty"`
}

// nodeMeta is what a node tells its peers through gossip. Fields are only
// ever added, so nodes of different versions read each other.
type nodeMeta struct {
	Version  uint8  `msgpack:"v"`
	PeerAddr string `msgpack:"p"`
	HTTPAddr string `msgpack:"h,omitempty"`
	RaftAddr string `msgpack:"r,omitempty"`
	// Leaving is set by a node about to leave gracefully, so that peers
	// drop it from their rings (and raft) at once, as departed.
	Leaving bool `msgpack:"l,omitempty"`
	// Ring is the fingerprint of the node's ring config (Config.Ring):
	// nodes whose configs differ would pick different owners, so they
	// refuse each other (checkRing). Zero: a node from before it was sent.
	Ring uint64 `msgpack:"g,omitempty"`
}

// memberUp is a member's context in the route tables, ended when the
// member leaves the ring.
type memberUp struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// viewEntry is a member as last heard of, and when.
type viewEntry struct {
	Member
	since time.Time
}

// routeTable says who owns which key: an immutable snapshot published on
// every membership change (but for its cache of successor rings).
type routeTable struct {
	ring  *ring.Ring
	self  string
	addrs map[string]string // member name → peer address
	// up holds a context per member, cancelled once a later table drops
	// the member: a forward waiting for its answer then stops waiting.
	up map[string]context.Context
	// succ is the ring without this node: the owners its keys would have
	// if it failed. Nil when the node keeps no counter copies.
	succ *ring.Ring
	// prev is the ring before this one, await the live members this
	// table gives keys of to this node, and hand this node's hand-over of
	// the keys it gives away (see handover.go).
	prev  *ring.Ring
	await map[string]bool
	hand  *handing
	// seq is the generation of hand-over messages when this table was
	// prepared: a message with a later seq was sent after it.
	seq uint64
	// joined: the node had joined through its seeds when this table's
	// members were read, so they are the cluster's, not a partial view.
	joined bool
	// epochs holds each member's count of returns to the ring: a member
	// that left and came back between two tables is a change.
	epochs map[string]uint64
	// settledAt is 1 + the generation of the hand-over messages at which
	// this table was found to say alone who decides each key; 0: not yet.
	settledAt atomic.Uint64
	// known counts the members in the ring and those that failed (not
	// left) and are still tried (see reconnectLoop). minority is set when
	// the ring holds fewer than half of them: this node is on the small
	// side of a partition (or nearly alone after crashes), where the
	// other side has taken over its keys, so it decides no check from a
	// counter: the policy's failure mode decides every one, with the
	// `local` share of known members.
	known    int
	minority bool
}

// owner returns the member that owns k, and its peer address.
func (rt *routeTable) owner(k bucket.Key) (name, addr string) {
	var buf [128]byte
	enc, _ := k.AppendBinary(buf[:0])
	name = rt.ring.Owner(enc)
	return name, rt.addrs[name]
}

// successor returns the member that would own k if owner failed (the
// owner in rt's ring without it), and its peer address; "" when owner is
// the only member. Every node with the same members computes the same.
func (n *Node) successor(rt *routeTable, k bucket.Key, owner string) (name, addr string) {
	r := n.ringWithout(rt, owner)
	if r.Len() == 0 {
		return "", ""
	}
	var buf [128]byte
	enc, _ := k.AppendBinary(buf[:0])
	name = r.Owner(enc)
	return name, rt.addrs[name]
}

// upCtx returns the context that ends when member leaves the ring.
func (rt *routeTable) upCtx(member string) context.Context {
	if ctx := rt.up[member]; ctx != nil {
		return ctx
	}
	return droppedCtx
}

// droppedCtx is the context of a member no table holds.
var droppedCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// gossip is the membership side of a node: memberlist and the member view
// it maintains from memberlist's events.
type gossip struct {
	n        *Node
	ml       *memberlist.Memberlist
	meta     []byte
	mu       sync.Mutex
	alive    map[string]nodeMeta  // members in the ring
	left     map[string]bool      // members that left gracefully
	view     map[string]viewEntry // every member heard of, for Members
	change   chan struct{}        // a rebuild is due (capacity 1)
	up       map[string]memberUp  // a context per member in the last ring built
	joined   chan struct{}        // closed once a join succeeded (markJoined)
	joinOnce sync.Once
	ring     uint64 // this node's ring config fingerprint
	self     string // the gossip address memberlist advertises
	// ringRefused: a merge was refused for another ring config since the
	// last join began.
	ringRefused atomic.Bool
	// bootstrap: the node started its cluster (no seed but itself, or
	// Config.Bootstrap without raft state).
	bootstrap atomic.Bool
	// epoch counts each member's returns to the ring (under mu).
	epoch map[string]uint64
	// joinedNano is when joined was closed (Unix nanoseconds).
	joinedNano atomic.Int64
	// lost holds the members that failed (not left), by name, with the
	// gossip address to rejoin them at: see reconnectLoop.
	lost map[string]lostMember
	// switching is held by a ring rebuild from reading the members to the
	// end of its hand-over, and by Leave's switch to a ring without this
	// node: the two never overlap, so a table read before the leave
	// (naming this node) is never published after it, and a rebuild after
	// it reads the members with this node left out.
	switching sync.Mutex
	// hook, when set (tests), runs in rebuild at each rebuildStage.
	hook atomic.Pointer[func(rebuildStage)]
}

// rebuildStage is a point of a ring rebuild, for tests to hold it at.
type rebuildStage int

// Stages of a rebuild: about to take switching; members read, under it;
// done, switching released.
const (
	rebuildStart rebuildStage = iota
	rebuildRead
	rebuildDone
)

// at runs the test hook, if any, at stage s.
func (g *gossip) at(s rebuildStage) {
	if h := g.hook.Load(); h != nil {
		(*h)(s)
	}
}

// lostMember is a member that failed, and since when.
type lostMember struct {
	addr  string
	since time.Time
}

// reconnectFor is how long a node keeps trying to rejoin a member that
// failed: a partition that lasts longer leaves two clusters.
const reconnectFor = 24 * time.Hour

func (n *Node) startGossip(ctx context.Context) error {
	cfg := n.cfg
	host, portStr, _ := net.SplitHostPort(cfg.GossipAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("cluster: GossipAddr %q: bad port", cfg.GossipAddr)
	}
	g := &gossip{
		n:      n,
		alive:  make(map[string]nodeMeta),
		left:   make(map[string]bool),
		view:   make(map[string]viewEntry),
		up:     make(map[string]memberUp),
		epoch:  make(map[string]uint64),
		lost:   make(map[string]lostMember),
		change: make(chan struct{}, 1),
		joined: make(chan struct{}),
	}
	n.gossip = g
	g.ring = cfg.Ring.Fingerprint()
	meta := nodeMeta{Version: 1, PeerAddr: n.tr.Addr(), HTTPAddr: cfg.HTTPAddr, Ring: g.ring}
	if n.raft != nil {
		meta.RaftAddr = n.raft.addr
	}
	g.meta, err = msgpack.Marshal(meta)
	if err != nil {
		return err
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if cfg.GossipAdvertise != "" {
		ah, ap, err := net.SplitHostPort(cfg.GossipAdvertise)
		if err != nil {
			return fmt.Errorf("cluster: GossipAdvertise: %w", err)
		}
		mc.AdvertiseAddr = ah
		if mc.AdvertisePort, err = strconv.Atoi(ap); err != nil {
			return fmt.Errorf("cluster: GossipAdvertise %q: bad port", cfg.GossipAdvertise)
		}
	}
	t := cfg.Gossip
	set := func(d *time.Duration, v time.Duration) {
		if v > 0 {
			*d = v
		}
	}
	set(&mc.ProbeInterval, t.ProbeInterval)
	set(&mc.ProbeTimeout, t.ProbeTimeout)
	set(&mc.GossipInterval, t.GossipInterval)
	set(&mc.PushPullInterval, t.PushPullInterval)
	set(&mc.TCPTimeout, t.TCPTimeout)
	set(&mc.DeadNodeReclaimTime, t.DeadNodeReclaimTime)
	if t.SuspicionMult > 0 {
		mc.SuspicionMult = t.SuspicionMult
	}
	if t.GossipInterval > 0 && t.GossipInterval < 100*time.Millisecond {
		mc.GossipToTheDeadTime = 2 * time.Second
	}
	mc.SecretKey = n.sec.gossip  // GossipVerifyIncoming: unencrypted messages are refused
	mc.Logger = n.gossipLogger() // counts and logs refused gossip (guard.go)
	mc.Delegate = g
	mc.Events = g
	mc.Alive = g // refuses members of another ring config
	mc.Merge = g

	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: gossip on %s: %w", cfg.GossipAddr, err)
	}
	g.ml = ml
	// Read once: memberlist's local node is rewritten, without a lock
	// the reader could take, on every update of its metadata.
	ln := ml.LocalNode()
	g.self = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	n.wg.Add(2)
	go g.rebuildLoop()
	go g.reconnectLoop(max(time.Second, 5*mc.ProbeInterval))
	if len(cfg.Seeds) == 0 {
		g.bootstrap.Store(true)
		g.markJoined()
	} else if n.bootstrapped {
		// The cluster starts here; the seeds are the nodes that will join
		// it, which this one looks for in the background.
		g.bootstrap.Store(true)
		g.markJoined()
		n.wg.Add(1)
		go g.joinLoop()
	} else if err := g.join(ctx); err != nil {
		if errors.Is(err, ErrRingConfig) {
			return err // a config error: retrying cannot mend it
		}
		n.log.Warn("join failed; retrying in the background", "seeds", cfg.Seeds, "err", err)
		n.wg.Add(1)
		go g.joinLoop()
	}
	return nil
}

// join contacts the seeds once.
func (g *gossip) join(ctx context.Context) error {
	seeds := slices.DeleteFunc(slices.Clone(g.n.cfg.Seeds), func(s string) bool {
		return s == g.localAddr()
	})
	if len(seeds) == 0 {
		g.bootstrap.Store(true)
		g.markJoined()
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	g.ringRefused.Store(false)
	n, err := g.ml.Join(seeds)
	if n == 0 && g.ringRefused.Load() {
		return fmt.Errorf("cluster: join %v: %w", seeds, ErrRingConfig)
	}
	if n > 0 {
		g.markJoined() // the ring built from here on is the cluster's
		g.n.log.Info("joined cluster", "contacted", n, "members", g.ml.NumMembers())
		return nil
	}
	if err == nil {
		err = errors.New("no seed answered")
	}
	return err
}

func (g *gossip) joinLoop() {
	defer g.n.wg.Done()
	wait := 100 * time.Millisecond
	for {
		select {
		case <-g.n.stop:
			return
		case <-time.After(wait):
		}
		if err := g.join(g.n.life); err == nil {
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// localAddr is the address peers gossip with, as memberlist advertises it.
func (g *gossip) localAddr() string { return g.self }

// joinedAt returns when the node joined (zero before).
func (g *gossip) joinedAt() time.Time {
	if ns := g.joinedNano.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// markJoined makes the node Ready as far as membership goes, and asks for
// a rebuild: a table built before (joined false) would otherwise stay the
// published one, and checks would wait on it for a change that a lone
// node never gets.
func (g *gossip) markJoined() {
	g.joinOnce.Do(func() {
		g.joinedNano.Store(time.Now().UnixNano())
		close(g.joined)
		select {
		case g.change <- struct{}{}:
		default:
		}
	})
}

func (g *gossip) isJoined() bool {
	select {
	case <-g.joined:
		return true
	default:
		return false
	}
}

// NodeMeta implements memberlist.Delegate.
func (g *gossip) NodeMeta(limit int) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.meta) > limit {
		return nil
	}
	return g.meta
}

// announceLeave tells peers, through the node's metadata, that it is about
// to leave.
func (g *gossip) announceLeave(timeout time.Duration) error {
	var meta nodeMeta
	g.mu.Lock()
	err := msgpack.Unmarshal(g.meta, &meta)
	if err == nil {
		meta.Leaving = true
		g.meta, err = msgpack.Marshal(meta)
	}
	g.mu.Unlock()
	if err != nil {
		return err
	}
	return g.ml.UpdateNode(timeout)
}

// NotifyAlive implements memberlist.AliveDelegate: a member whose ring
// config differs is refused, so that it never enters the ring.
func (g *gossip) NotifyAlive(m *memberlist.Node) error { return g.checkRing(m) }

// NotifyMerge implements memberlist.MergeDelegate: a join with a cluster
// (or of a node) whose ring config differs is refused, on both sides.
func (g *gossip) NotifyMerge(peers []*memberlist.Node) error {
	for _, m := range peers {
		if err := g.checkRing(m); err != nil {
			g.ringRefused.Store(true)
			return err
		}
	}
	return nil
}

// checkRing refuses, counts and logs (capped) a member whose metadata
// carries another ring config's fingerprint.
func (g *gossip) checkRing(m *memberlist.Node) error {
	var meta nodeMeta
	if msgpack.Unmarshal(m.Meta, &meta) != nil || meta.Ring == 0 || meta.Ring == g.ring {
		return nil // unreadable metadata is update's to refuse
	}
	err := fmt.Errorf("%w: member %s", ErrRingConfig, m.Name)
	g.n.guard.refuse("gossip", "ring_config", net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))), err)
	return err
}

// NotifyMsg implements memberlist.Delegate; the node sends no user messages.
func (g *gossip) NotifyMsg([]byte) {}

// GetBroadcasts implements memberlist.Delegate.
func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate.
func (g *gossip) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (g *gossip) MergeRemoteState(buf []byte, join bool) {}

// NotifyJoin implements memberlist.EventDelegate.
func (g *gossip) NotifyJoin(m *memberlist.Node) { g.update(m, true) }

// NotifyLeave implements memberlist.EventDelegate.
func (g *gossip) NotifyLeave(m *memberlist.Node) { g.update(m, false) }

// NotifyUpdate implements memberlist.EventDelegate.
func (g *gossip) NotifyUpdate(m *memberlist.Node) { g.update(m, true) }

func (g *gossip) update(m *memberlist.Node, alive bool) {
	var meta nodeMeta
	if alive {
		if err := msgpack.Unmarshal(m.Meta, &meta); err != nil || meta.PeerAddr == "" {
			g.n.log.Warn("member without readable metadata; left out of the ring", "member", m.Name, "err", err)
			alive = false
		}
	}
	// A leave event may carry the state memberlist had before it: a
	// departed member is "left" when it said goodbye (announced in its
	// metadata, or in the event), else "dead".
	leaving := meta.Leaving
	if alive && leaving {
		alive = false
	}
	g.mu.Lock()
	leaving = leaving || g.left[m.Name]
	g.mu.Unlock()
	state := "dead"
	switch {
	case alive:
		state = "alive"
	case leaving || m.State == memberlist.StateLeft:
		state = "left"
	}
	g.mu.Lock()
	v := g.view[m.Name]
	v.Member.Name, v.State, v.since = m.Name, state, time.Now()
	v.GossipAddr = net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
	if meta.PeerAddr != "" {
		v.PeerAddr, v.HTTPAddr = meta.PeerAddr, meta.HTTPAddr
	}
	g.view[m.Name] = v
	if state == "dead" && m.Name != g.n.cfg.NodeName {
		if _, ok := g.lost[m.Name]; !ok {
			g.lost[m.Name] = lostMember{addr: v.GossipAddr, since: v.since}
		}
	} else {
		delete(g.lost, m.Name)
	}
	if alive {
		if _, was := g.alive[m.Name]; !was {
			// A member back in the ring is a new process: what its
			// last hand-over said no longer holds, and its keys must
			// be handed to it even if this node never saw it gone.
			g.n.ho.forget(m.Name)
			g.epoch[m.Name]++
		}
		g.alive[m.Name] = meta
		delete(g.left, m.Name)
	} else {
		delete(g.alive, m.Name)
		if state == "left" {
			g.left[m.Name] = true
		}
	}
	g.mu.Unlock()
	if rn := g.n.raft; rn != nil {
		select {
		case rn.kick <- struct{}{}:
		default:
		}
	}
	g.n.log.Info("membership change", "member", m.Name, "alive", alive, "state", stateName(m.State))
	select {
	case g.change <- struct{}{}:
	default:
	}
}

// routes builds the route table of the current members; a leaving node
// leaves itself out.
func (g *gossip) routes() *routeTable {
	joined := g.isJoined() // before the members: they include every seed's
	g.mu.Lock()
	defer g.mu.Unlock()
	self := g.n.cfg.NodeName
	leaving := g.n.leaving.Load()
	names := make([]string, 0, len(g.alive))
	addrs := make(map[string]string, len(g.alive))
	for name, m := range g.alive {
		if name == self && leaving {
			continue
		}
		names = append(names, name)
		addrs[name] = m.PeerAddr
	}
	rt := &routeTable{ring: ring.New(names, g.n.cfg.Ring), self: self, addrs: addrs, known: len(names), epochs: make(map[string]uint64, len(names)), joined: joined}
	for _, name := range names {
		rt.epochs[name] = g.epoch[name]
	}
	for name := range g.lost {
		if _, ok := g.alive[name]; !ok {
			rt.known++
		}
	}
	rt.minority = 2*len(names) < rt.known
	if g.n.replicas != nil {
		others := slices.DeleteFunc(slices.Clone(names), func(name string) bool { return name == self })
		rt.succ = ring.New(others, g.n.cfg.Ring)
	}
	// A member's context lives as long as it stays in the rings built.
	rt.up = make(map[string]context.Context, len(names))
	for _, name := range names {
		u, ok := g.up[name]
		if !ok {
			u.ctx, u.cancel = context.WithCancel(g.n.life)
			g.up[name] = u
		}
		rt.up[name] = u.ctx
	}
	for name, u := range g.up {
		if _, ok := rt.up[name]; !ok {
			if g.left[name] {
				// A member that left gracefully answers what it was
				// sent before it closes: a forward waiting for it is not
				// cut (its check may be decided already).
				time.AfterFunc(g.n.cfg.FailoverTimeout, u.cancel)
			} else {
				u.cancel()
			}
			delete(g.up, name)
		}
	}
	return rt
}

// rebuildLoop publishes a new route table after membership changes and
// hands off the counters this node no longer owns.
func (g *gossip) rebuildLoop() {
	defer g.n.wg.Done()
	for {
		select {
		case <-g.n.stop:
			return
		case <-g.change:
		}
		if g.rebuild() {
			g.n.replicateAll()
		}
	}
}

// rebuild publishes the route table of the current members and, when its
// ring differs from the last, runs its hand-over, all under switching. It
// reports whether the ring changed.
func (g *gossip) rebuild() bool {
	g.at(rebuildStart)
	defer g.at(rebuildDone)
	g.switching.Lock()
	defer g.switching.Unlock()
	rt := g.routes()
	g.at(rebuildRead)
	old := g.n.route.Load()
	if old != nil && old.minority != rt.minority {
		if rt.minority {
			g.n.log.Warn("this node reaches fewer than half of the members it knows; the failure mode decides every check until it reaches more", "members", rt.ring.Len(), "known", rt.known)
		} else {
			g.n.log.Info("this node reaches a majority of the members again; checks go to their owners", "members", rt.ring.Len(), "known", rt.known)
		}
	}
	if old != nil && slices.Equal(old.ring.Members(), rt.ring.Members()) && maps.Equal(old.epochs, rt.epochs) {
		rt.prev, rt.await, rt.hand, rt.seq = old.prev, old.await, old.hand, old.seq
		g.n.establish(rt)
		g.n.route.Store(rt)
		g.n.ho.notify()
		if !g.n.ho.established.Load() || !g.n.ho.handPending.CompareAndSwap(true, false) {
			return false
		}
		g.n.handOverFor(rt, false)
		return true
	}
	g.n.prepareRoute(old, rt)
	// The copies of the keys this node takes over from a failed one
	// become its counters before their checks arrive here; the switch
	// is under the lock of local decisions (see handover.go).
	g.n.promoteReplicas(rt)
	g.n.ho.notify()
	g.n.log.Info("ring rebuilt", "members", rt.ring.Len())
	g.n.metrics.members.Set(float64(rt.ring.Len()))
	// A joining node's ring may be a partial view of its peers': counters
	// it would hand on from it (those the peers handed it) may be its
	// own, and a hand-over message naming it would have the peers decide
	// keys whose counters are here. It decides nothing until established,
	// tells its peers its ring meanwhile, and hands over then.
	joining := !g.n.ho.established.Load()
	g.n.ho.handPending.Store(joining)
	g.n.handOverFor(rt, joining)
	return true
}

// handOverFor runs rt's hand-over, bounded in time.
func (n *Node) handOverFor(rt *routeTable, joining bool) {
	ctx, cancel := context.WithTimeout(n.life, 10*time.Second)
	defer cancel()
	n.handOver(ctx, rt, joining)
}

// reconnectLoop tries, every interval, to join again the members that
// failed. memberlist itself stops probing a dead member and gossips to it
// only for a while (GossipToTheDeadTime), so two sides of a network
// partition that heals later would otherwise stay two clusters for good,
// each owning every key. A member that answers a join and learns it was
// declared dead refutes it, and both sides merge their views (see
// docs/architecture.md, "Faults on separate hosts").
func (g *gossip) reconnectLoop(interval time.Duration) {
	defer g.n.wg.Done()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-g.n.stop:
			return
		case <-tick.C:
		}
		g.mu.Lock()
		var addrs, names []string
		for name, l := range g.lost {
			if time.Since(l.since) > reconnectFor {
				delete(g.lost, name)
				continue
			}
			names, addrs = append(names, name), append(addrs, l.addr)
		}
		g.mu.Unlock()
		for i, addr := range addrs {
			select {
			case <-g.n.stop:
				return
			default:
			}
			// A member still down refuses (or times out at TCPTimeout):
			// expected, so not logged.
			if n, err := g.ml.Join([]string{addr}); err == nil && n > 0 {
				g.n.log.Info("reached a failed member again; rejoining it", "member", names[i], "addr", addr)
			}
		}
	}
}

// raftMembers returns the raft address of each live member, and the
// members that left gracefully.
func (g *gossip) raftMembers() (alive map[string]string, left map[string]bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	alive = make(map[string]string, len(g.alive))
	for name, m := range g.alive {
		if m.RaftAddr != "" {
			alive[name] = m.RaftAddr
		}
	}
	return alive, maps.Clone(g.left)
}

// peerAddr returns the peer address of a live member, or "".
func (g *gossip) peerAddr(name string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.alive[name].PeerAddr
}

// members lists the members this node has heard of, with their state as
// of the last event: departed ones stay listed (as "left" or "dead") for
// ten minutes. It reads the node's own view, not memberlist's nodes, which
// memberlist updates without a lock that callers can take.
func (g *gossip) members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.view))
	for name, v := range g.view {
		if v.State != "alive" && time.Since(v.since) > 10*time.Minute {
			delete(g.view, name)
			continue
		}
		m := v.Member
		m.Self = name == g.n.cfg.NodeName
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateLeft:
		return "left"
	default:
		return "dead"
	}
}

var _ transport.Handler = peerHandler{}
