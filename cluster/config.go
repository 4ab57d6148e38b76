package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster/ring"
	"github.com/vibewell/ratelimit/transport"
)

// Config configures a Node. The zero value runs a single node with the
// default policies; every zero field takes the default in its comment.
// A negative number turns off the fields that can be off (TopDeniedSlots,
// DenyCacheKeys, LeaseMinLimit, ReplicaInterval) and is refused by
// Validate in every other field.
type Config struct {
	// NodeName identifies the node in a cluster and in logs; it must be unique
	// among peers. Default: the hostname plus a random suffix.
	NodeName string
	// Policies is the policy table. Default: DefaultPolicies().
	Policies []bucket.Policy
	// Shadow puts every policy in shadow mode: checks are decided and counted
	// but always allowed.
	Shadow bool
	// Store holds the counters. Default: bucket.NewMemoryStore with
	// MemoryConfig{}. In a cluster, each key's counter lives on the node
	// that owns the key and moves when owners change, so a Store of your
	// own must hand counters over (Range, Merge and Delete, as
	// bucket.MemoryStore does), unless it is shared (SharedStore).
	Store bucket.Store
	// SharedStore says that Store is one store shared by every node of
	// the cluster (the Redis store, every node on the same server): each
	// node then decides its checks in it directly, and nothing is
	// forwarded, handed over or copied. Validate refuses it without a
	// Store, and refuses a Store of your own that can neither hand
	// counters over nor is marked shared: taken for a node's own, such a
	// store would let each node admit the whole limit. Ignored on a
	// standalone node.
	SharedStore bool
	// Clock tells the time. Default: the wall time at the start plus the
	// monotonic time since, read on every check, so that no two checks
	// see a gap longer than the real one.
	Clock bucket.Clock
	// Logger receives lifecycle and (rate-capped) event logs. Default: none;
	// the library never writes to stderr by itself.
	Logger *slog.Logger
	// Metrics is where the node registers its Prometheus collectors.
	// Default: none.
	Metrics prometheus.Registerer
	// LogDenials logs each denied check, at most DenialLogRate a second.
	LogDenials bool
	// DenialLogRate caps denial log lines per second; the rest are counted
	// and summarised. Default: 10.
	DenialLogRate int
	// TopDeniedSlots is the number of keys per policy and minute that the
	// node keeps of its denials, for TopDenied (see topk for the error
	// bound). Memory: about 1.7 KiB per slot for each policy that denied
	// anything. Default: 64. Negative turns the counting off.
	TopDeniedSlots int
	// MaxKeyLen bounds the length of a key, in bytes. Default: 512.
	MaxKeyLen int
	// MaxHits bounds the hits of one check. Default: 1,000,000.
	MaxHits int64
	// MaxKeys bounds the counters the default store holds, and the counter
	// copies kept for peers, each (see bucket.MemoryConfig.MaxKeys: a full
	// store evicts the counters whose loss forgives the fewest hits, never
	// one that is denying while another is not). Ignored with a Store of
	// your own. Default: bucket.DefaultMaxKeys.
	MaxKeys int
	// DenyCacheKeys bounds the owners' denials a node keeps to deny checks
	// of those keys itself, without forwarding them, until their retry
	// time (exact: the owner would deny them too). Negative: none.
	// Default: DefaultDenyCacheKeys.
	DenyCacheKeys int
	// LeaseMinLimit is the smallest limit of a key (sliding or fixed
	// window) whose allowance a node may lease from the key's owner when
	// it checks the key often, to admit its checks without forwarding
	// them (never more than the limit; see docs/architecture.md).
	// Negative: no leases. Default: DefaultLeaseMinLimit.
	LeaseMinLimit int64
	// SweepInterval is how often idle counters are dropped. Default: 1 minute.
	SweepInterval time.Duration
	// ReplicaInterval, when negative, turns the counter copies off. With
	// any other value, a node copies each counter that checks changed to
	// the node that would own its key if this one failed, continuously
	// (each round leaves when the one before returns) once the hits since
	// its last copy reach bucket.CopyEvery (every hit below a capacity of
	// 2048, capacity/1024 above), so that a crash forgives at most one
	// round's hits plus fewer than CopyEvery (none with sync replication).
	// It needs the default store; a MemoryStore of your own needs
	// TrackChanges.
	ReplicaInterval time.Duration

	// GossipAddr is the host:port where the node gossips membership (UDP and
	// TCP). Empty runs a standalone node: no peers, every key local. Port 0
	// picks a free port (tests use "127.0.0.1:0").
	GossipAddr string
	// GossipAdvertise is the host:port peers use to reach GossipAddr.
	// Default: GossipAddr, or a private address of the host when
	// GossipAddr's host is 0.0.0.0.
	GossipAdvertise string
	// PeerAddr is where the node serves checks forwarded by peers. Default:
	// the host of GossipAddr with a free port.
	PeerAddr string
	// PeerAdvertise is the address peers dial to reach PeerAddr. Default:
	// PeerAddr as bound; set it when PeerAddr's host is 0.0.0.0.
	PeerAdvertise string
	// HTTPAddr is this node's HTTP API address, advertised to peers so that
	// any node can list where the others serve. Optional.
	HTTPAddr string
	// Seeds are host:port gossip addresses of nodes to join; DNS names
	// resolve (a Kubernetes headless service works). The node retries until
	// it joins one, and is Ready only then (unless it bootstraps; see
	// Bootstrap). Empty starts a new cluster.
	Seeds []string
	// Bootstrap makes this node the one that starts the cluster when it
	// has no raft state yet (a first start, or no DataDir): it bootstraps
	// raft alone and is Ready at once, and looks for its Seeds in the
	// background; the other nodes join it. With raft state it is ignored,
	// and the node rejoins through its Seeds. Set it on one node: two that
	// bootstrap make two clusters. A node without Seeds (or whose only
	// seed is itself) starts a new cluster anyway.
	Bootstrap bool
	// Gossip tunes failure detection. Zero fields take memberlist's LAN
	// defaults; LocalGossip gives tight timings for tests.
	Gossip GossipConfig
	// ClusterKey is the cluster's shared secret (ClusterKeySize random
	// bytes; NewClusterKey, ParseClusterKey): every node of a cluster has
	// the same. Keys derived from it (HKDF-SHA256, one per purpose)
	// encrypt and authenticate gossip, and sign the short-lived
	// certificate each node issues itself for the mutual TLS of the peer
	// transport and of raft, so that a node without it can neither join,
	// nor send checks, calls or raft messages, nor read them.
	//
	// Default: a node that starts a cluster (GossipAddr, and no Seeds or
	// Bootstrap) uses the key kept in DataDir, or generates one and keeps
	// it there (mode 0600; in memory without DataDir); Node.ClusterKey
	// returns it for the nodes that join. A node that joins (Seeds, no
	// Bootstrap) with no key fails with ErrNoClusterKey, unless DataDir
	// keeps one, or it has its own credentials (PeerTLS and SecretKey) or
	// Insecure.
	ClusterKey []byte
	// Insecure runs the cluster without authentication or encryption, for
	// measurements on one machine: every address must be loopback
	// (ErrInsecureAddr), and the node says so in a warning at start.
	Insecure bool
	// SecretKey, when set (16, 24 or 32 bytes), is the gossip key (AES-GCM)
	// instead of the one derived from ClusterKey; every node needs the
	// same. It is meant for clusters secured with their own PKI (PeerTLS)
	// and for those that used it before ClusterKey existed.
	SecretKey []byte
	// PeerTLS, when set, is the TLS of peer connections and raft instead of
	// the certificates derived from ClusterKey: a team's own PKI. Set
	// ClientAuth and ClientCAs for mutual authentication.
	PeerTLS *tls.Config
	// Transport carries checks between nodes; the node serves on it and
	// closes it on Close. Default: TCP on PeerAddr. Tests may pass a
	// transport.Network's transport.
	Transport transport.Transport
	// ForwardTimeout is the time a check forwarded to its owner is
	// expected to take; a slower one is logged (at a capped rate) and
	// keeps waiting, since a slow owner is not a dead one and any other
	// node deciding the check could admit beyond the limit. Default: 250ms.
	ForwardTimeout time.Duration
	// FailoverTimeout is how long a forwarded check waits for an owner
	// that membership still holds and whose connection stands; past it
	// (or at once when the owner refuses the connection or is dropped from
	// the ring) the key's successor decides against its copy of the
	// counter, and the policy's failure mode only if the successor cannot
	// answer either. Default: 10s.
	FailoverTimeout time.Duration
	// Ring sets how keys spread over nodes; every node must use the same.
	Ring ring.Config

	// RaftAddr is where the node serves raft, which replicates the policy
	// table. Default: the host of GossipAddr with a free port.
	RaftAddr string
	// RaftAdvertise is the address peers dial to reach RaftAddr. Default:
	// RaftAddr; it must be set when RaftAddr's host is 0.0.0.0.
	RaftAdvertise string
	// DataDir holds the raft log, stable store and snapshots, so that
	// policy changes survive restarts. Empty keeps them in memory: a
	// restarted node then gets the table back from its peers, and a
	// cluster restarted whole starts again from its configured Policies.
	DataDir string
	// Voters is the number of raft voters; every other node is a
	// non-voter that still receives the table. Default: 3.
	Voters int
	// VoterGrace is how long a voter may be gone (crashed, not left) before
	// it is replaced by a non-voter. Default: 30s.
	VoterGrace time.Duration
	// RaftTimeout is raft's heartbeat and election timeout: a leader's
	// crash is noticed within one to two of it, and the leader sends each
	// follower a heartbeat every tenth of it, which is most of what an idle
	// cluster costs. Only policy changes wait for a leader; checks never
	// do. Default: 2s.
	RaftTimeout time.Duration

	// legacyCommit, when set, is raft's CommitTimeout, with no barrier
	// after each change: the timing before idle.go, which benchmarks
	// compare against.
	legacyCommit time.Duration
}

// GossipConfig holds the membership timings. Zero fields take the defaults
// of memberlist.DefaultLANConfig, which detect a crashed node in about 5 s,
// except GossipInterval.
type GossipConfig struct {
	ProbeInterval    time.Duration // how often a random member is probed
	ProbeTimeout     time.Duration // how long a probe waits for an ack
	GossipInterval   time.Duration // how often gossip is sent; default 500ms (memberlist's LAN default, 200ms, wakes an idle node 5 times a second)
	PushPullInterval time.Duration // how often full state is exchanged
	SuspicionMult    int           // suspicion timeout, in probe intervals × log(N)
	TCPTimeout       time.Duration // bound of a TCP push/pull or join
	// DeadNodeReclaimTime lets a node that restarts under the same name at
	// a new address rejoin after this long. Default: 10s.
	DeadNodeReclaimTime time.Duration
}

// LocalGossip returns timings for nodes on one machine (tests): a crash is
// detected in one to two seconds.
func LocalGossip() GossipConfig {
	return GossipConfig{
		ProbeInterval:       200 * time.Millisecond,
		ProbeTimeout:        150 * time.Millisecond,
		GossipInterval:      20 * time.Millisecond,
		PushPullInterval:    2 * time.Second,
		SuspicionMult:       3,
		TCPTimeout:          500 * time.Millisecond,
		DeadNodeReclaimTime: 100 * time.Millisecond,
	}
}

// LocalConfig returns the configuration of a node of a cluster on one
// machine (tests, demos), as memberlist's DefaultLocalConfig: gossip on
// 127.0.0.1 with a free port (peer and raft ports follow), LocalGossip's
// timings and a raft timeout of a second. Add Seeds (the Addrs().Gossip
// of a started node) to join one; the first node generates the cluster
// key (Node.ClusterKey) the others need. Every other field is Config's
// default.
func LocalConfig() Config {
	return Config{
		GossipAddr:  "127.0.0.1:0",
		Gossip:      LocalGossip(),
		RaftTimeout: time.Second,
	}
}

// Defaults for Config fields.
const (
	DefaultMaxKeyLen       = 512
	DefaultMaxHits         = 1_000_000
	DefaultSweepInterval   = time.Minute
	DefaultDenialLogRate   = 10
	DefaultForwardTimeout  = 250 * time.Millisecond
	DefaultFailoverTimeout = 10 * time.Second
	DefaultReplicaInterval = 100 * time.Millisecond
	DefaultRaftTimeout     = 2 * time.Second
	DefaultGossipInterval  = 500 * time.Millisecond
)

var nameSeq atomic.Uint64

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.NodeName == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "node"
		}
		c.NodeName = host + "-" + strconv.FormatUint(uint64(os.Getpid()), 36) + "-" + strconv.FormatUint(nameSeq.Add(1), 36)
	}
	if c.Policies == nil {
		c.Policies = DefaultPolicies()
	}
	if c.ReplicaInterval == 0 {
		c.ReplicaInterval = DefaultReplicaInterval
	}
	if c.Store == nil {
		c.Store = bucket.NewMemoryStore(bucket.MemoryConfig{MaxKeys: c.MaxKeys, TrackChanges: c.GossipAddr != "" && c.ReplicaInterval > 0})
	}
	if c.DenyCacheKeys == 0 {
		c.DenyCacheKeys = DefaultDenyCacheKeys
	}
	if c.LeaseMinLimit == 0 {
		c.LeaseMinLimit = DefaultLeaseMinLimit
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.DenialLogRate <= 0 {
		c.DenialLogRate = DefaultDenialLogRate
	}
	if c.MaxKeyLen <= 0 {
		c.MaxKeyLen = DefaultMaxKeyLen
	}
	if c.MaxHits <= 0 {
		c.MaxHits = DefaultMaxHits
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.ForwardTimeout <= 0 {
		c.ForwardTimeout = DefaultForwardTimeout
	}
	if c.FailoverTimeout <= 0 {
		c.FailoverTimeout = max(DefaultFailoverTimeout, c.ForwardTimeout)
	}
	if c.Voters <= 0 {
		c.Voters = 3
	}
	if c.VoterGrace <= 0 {
		c.VoterGrace = 30 * time.Second
	}
	if c.RaftTimeout <= 0 {
		c.RaftTimeout = DefaultRaftTimeout
	}
	if c.Gossip.GossipInterval <= 0 {
		c.Gossip.GossipInterval = DefaultGossipInterval
	}
	if c.Gossip.DeadNodeReclaimTime <= 0 {
		c.Gossip.DeadNodeReclaimTime = 10 * time.Second
	}
	return c
}

// Validate reports the first invalid field of c. A zero field stands for
// its default; Validate makes nothing (no store, no name) and changes
// nothing. NodeName is required with DataDir.
func (c Config) Validate() error {
	// The fields as given: a zero field stands for its default, and
	// nothing (no store, no name) is made here.
	policies := c.Policies
	if policies == nil {
		policies = DefaultPolicies()
	}
	if _, err := newPolicyTable(policies, false, nil); err != nil {
		return fmt.Errorf("cluster: config: Policies: %w", err)
	}
	if err := c.validateStore(); err != nil {
		return err
	}
	if err := c.validateNumbers(); err != nil {
		return err
	}
	if c.DataDir != "" && c.NodeName == "" {
		// Raft knows a node by its name: a generated one would make the
		// node a stranger to its own log after a restart.
		return errors.New("cluster: config: NodeName: set it with DataDir, the same across restarts")
	}
	if c.GossipAddr != "" {
		if _, _, err := net.SplitHostPort(c.GossipAddr); err != nil {
			return fmt.Errorf("cluster: config: GossipAddr: %w", err)
		}
	}
	if c.PeerAddr != "" {
		if _, _, err := net.SplitHostPort(c.PeerAddr); err != nil {
			return fmt.Errorf("cluster: config: PeerAddr: %w", err)
		}
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("cluster: config: SecretKey: %d bytes, want 16, 24 or 32", len(c.SecretKey))
	}
	if len(c.Seeds) > 0 && c.GossipAddr == "" {
		return errors.New("cluster: config: Seeds: set GossipAddr to join a cluster")
	}
	return c.validateSecurity()
}

// validateNumbers refuses a negative value where it would not mean "off"
// (see Config): in those fields, zero is the way to ask for the default.
func (c Config) validateNumbers() error {
	g := c.Gossip
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"DenialLogRate", int64(c.DenialLogRate)}, {"MaxKeyLen", int64(c.MaxKeyLen)},
		{"MaxHits", c.MaxHits}, {"MaxKeys", int64(c.MaxKeys)}, {"Voters", int64(c.Voters)},
		{"SweepInterval", int64(c.SweepInterval)}, {"ForwardTimeout", int64(c.ForwardTimeout)},
		{"FailoverTimeout", int64(c.FailoverTimeout)}, {"VoterGrace", int64(c.VoterGrace)},
		{"RaftTimeout", int64(c.RaftTimeout)},
		{"Gossip.ProbeInterval", int64(g.ProbeInterval)}, {"Gossip.ProbeTimeout", int64(g.ProbeTimeout)},
		{"Gossip.GossipInterval", int64(g.GossipInterval)}, {"Gossip.PushPullInterval", int64(g.PushPullInterval)},
		{"Gossip.SuspicionMult", int64(g.SuspicionMult)}, {"Gossip.TCPTimeout", int64(g.TCPTimeout)},
		{"Gossip.DeadNodeReclaimTime", int64(g.DeadNodeReclaimTime)},
		{"Ring.PartitionCount", int64(c.Ring.PartitionCount)}, {"Ring.ReplicationFactor", int64(c.Ring.ReplicationFactor)},
	} {
		if f.v < 0 {
			return fmt.Errorf("cluster: config: %s: negative (%d); zero takes the default", f.name, f.v)
		}
	}
	if c.Ring.Load < 0 {
		return fmt.Errorf("cluster: config: Ring.Load: negative (%g); zero takes the default", c.Ring.Load)
	}
	return nil
}

// validateStore checks that a cluster node's store is either its own and
// able to hand counters over, or marked shared.
func (c Config) validateStore() error {
	if c.SharedStore && c.Store == nil {
		return errors.New("cluster: config: SharedStore: set without a Store; the default memory store is each node's own")
	}
	if c.GossipAddr == "" || c.Store == nil || c.SharedStore {
		return nil
	}
	if _, ok := c.Store.(handoffStore); !ok {
		return fmt.Errorf("cluster: config: Store: a %T cannot hand counters over between nodes (Range, Merge, Delete); set SharedStore if every node uses the same one (Redis)", c.Store)
	}
	return nil
}

// validateSecurity checks the cluster key and the Insecure opt-out.
func (c Config) validateSecurity() error {
	if len(c.ClusterKey) != 0 && len(c.ClusterKey) != ClusterKeySize {
		return fmt.Errorf("cluster: config: ClusterKey: %w: %d bytes, want %d", ErrBadClusterKey, len(c.ClusterKey), ClusterKeySize)
	}
	if c.GossipAddr == "" {
		return nil
	}
	if c.Insecure {
		if len(c.ClusterKey) > 0 || c.PeerTLS != nil || len(c.SecretKey) > 0 {
			return errors.New("cluster: config: Insecure: set with ClusterKey, SecretKey or PeerTLS; drop one")
		}
		for _, a := range []struct{ name, addr string }{
			{"GossipAddr", c.GossipAddr}, {"GossipAdvertise", c.GossipAdvertise},
			{"PeerAddr", c.PeerAddr}, {"PeerAdvertise", c.PeerAdvertise},
			{"RaftAddr", c.RaftAddr}, {"RaftAdvertise", c.RaftAdvertise},
		} {
			if a.addr != "" && !isLoopback(a.addr) {
				return fmt.Errorf("cluster: config: %s %s: %w", a.name, a.addr, ErrInsecureAddr)
			}
		}
		for _, s := range c.Seeds {
			if !isLoopback(s) {
				return fmt.Errorf("cluster: config: Seeds %s: %w", s, ErrInsecureAddr)
			}
		}
		return nil
	}
	if !c.startsCluster() && len(c.ClusterKey) == 0 && !c.ownCredentials() {
		return fmt.Errorf("cluster: config: %w", ErrNoClusterKey)
	}
	return nil
}

// startsCluster reports whether the node may start a new cluster, and so
// make its key: it has no seeds, or it is the one that bootstraps.
func (c Config) startsCluster() bool { return len(c.Seeds) == 0 || c.Bootstrap }

// ownCredentials reports whether the node authenticates its peers without
// the cluster key: a gossip key and its own PKI.
func (c Config) ownCredentials() bool {
	return len(c.SecretKey) > 0 && c.PeerTLS != nil
}
