package cluster_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/internal/testcluster"
)

// TestValidateNodeNameWithDataDir: a node that keeps raft's log needs a
// name of its own, the same across restarts; a generated one would make it
// a stranger to its log. Validate and Start refuse the pair without it.
func TestValidateNodeNameWithDataDir(t *testing.T) {
	cfg := cluster.Config{GossipAddr: "127.0.0.1:0", Insecure: true, DataDir: t.TempDir()}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "NodeName") {
		t.Fatalf("Validate with DataDir and no NodeName: %v, want an error naming NodeName", err)
	}
	if n, err := cluster.Start(context.Background(), cfg); err == nil {
		n.Close(context.Background())
		t.Fatal("Start with DataDir and no NodeName succeeded")
	}
	cfg.NodeName = "n1"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("with a NodeName: %v", err)
	}
	if err := (cluster.Config{}).Validate(); err != nil {
		t.Fatalf("the zero Config: %v", err)
	}
}

// TestCloseLifecycle: a Close whose ctx has expired still unregisters the
// node's metrics (another node registers on the same registry), and a
// second Close waits for the node's end and returns nil.
func TestCloseLifecycle(t *testing.T) {
	reg := prometheus.NewRegistry()
	n, err := cluster.Start(context.Background(), cluster.Config{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	_ = n.Close(expired)
	n2, err := cluster.Start(context.Background(), cluster.Config{Metrics: reg})
	if err != nil {
		t.Fatalf("a node on the registry of one closed with an expired ctx: %v", err)
	}
	defer n2.Close(context.Background())
	if err := n.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// ownStore is a Store of one's own that cannot hand counters over: only
// bucket.Store's methods of the memory store show through.
type ownStore struct{ bucket.Store }

// TestValidateSharedStore: in a cluster, a Store that cannot hand
// counters over is refused unless marked SharedStore (taken for each
// node's own, it would let every node admit the whole limit), and
// SharedStore without a Store is refused too.
func TestValidateSharedStore(t *testing.T) {
	own := ownStore{bucket.NewMemoryStore(bucket.MemoryConfig{})}
	base := cluster.Config{GossipAddr: "127.0.0.1:0", Insecure: true}
	for _, tc := range []struct {
		name   string
		store  bucket.Store
		shared bool
		gossip string
		ok     bool
	}{
		{"own store, not shared", own, false, base.GossipAddr, false},
		{"own store, shared", own, true, base.GossipAddr, true},
		{"memory store", bucket.NewMemoryStore(bucket.MemoryConfig{}), false, base.GossipAddr, true},
		{"shared without a store", nil, true, base.GossipAddr, false},
		{"own store, standalone", own, false, "", true},
	} {
		cfg := base
		cfg.Store, cfg.SharedStore, cfg.GossipAddr = tc.store, tc.shared, tc.gossip
		err := cfg.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate: %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "Store") {
			t.Errorf("%s: %v does not name the field", tc.name, err)
		}
	}
}

// TestFailoverTimeoutWithOwnTransport: with a Transport of the caller's
// (Config.Transport) and a ctx that never ends, a check whose owner has
// stalled waits FailoverTimeout, not the transport's own bound (2 s for
// the in-memory one), and is then decided without the owner.
func TestFailoverTimeoutWithOwnTransport(t *testing.T) {
	const failover = 4 * time.Second
	policies := []bucket.Policy{{Name: "p", Limit: 10, Window: time.Hour}}
	c := testcluster.Start(t, 2, testcluster.Options{Policies: policies, InMemory: true, Configure: func(i int, cfg *cluster.Config) {
		cfg.FailoverTimeout = failover
		cfg.Gossip.ProbeInterval = time.Hour // the stalled owner stays a member
	}})
	key := keyOwnedBy(c, "p", 1)
	c.Delay(1, time.Minute)
	defer c.Delay(1, 0)
	start := time.Now()
	d, err := c.Node(0).Allow(context.Background(), "p", key, 1)
	took := time.Since(start)
	if err != nil || !d.Allowed {
		t.Fatalf("check of a stalled owner's key: %+v %v", d, err)
	}
	// At least FailoverTimeout (more than the transport's bound); well
	// under the minute of the stall (room for a loaded machine).
	if took < failover || took > 20*time.Second {
		t.Fatalf("the check took %v, want FailoverTimeout (%v) and a little", took, failover)
	}
}

// TestValidateNegatives: a negative number turns off the fields that can
// be off, and is refused, with the field named, everywhere else (where it
// used to mean the default, like zero).
func TestValidateNegatives(t *testing.T) {
	for _, off := range []func(*cluster.Config){
		func(c *cluster.Config) { c.TopDeniedSlots = -1 },
		func(c *cluster.Config) { c.DenyCacheKeys = -1 },
		func(c *cluster.Config) { c.LeaseMinLimit = -1 },
		func(c *cluster.Config) { c.ReplicaInterval = -1 },
	} {
		var cfg cluster.Config
		off(&cfg)
		if err := cfg.Validate(); err != nil {
			t.Errorf("a field that can be off, negative: %v", err)
		}
	}
	for name, set := range map[string]func(*cluster.Config){
		"DenialLogRate":        func(c *cluster.Config) { c.DenialLogRate = -1 },
		"MaxKeyLen":            func(c *cluster.Config) { c.MaxKeyLen = -1 },
		"MaxHits":              func(c *cluster.Config) { c.MaxHits = -1 },
		"MaxKeys":              func(c *cluster.Config) { c.MaxKeys = -1 },
		"SweepInterval":        func(c *cluster.Config) { c.SweepInterval = -time.Second },
		"ForwardTimeout":       func(c *cluster.Config) { c.ForwardTimeout = -time.Second },
		"FailoverTimeout":      func(c *cluster.Config) { c.FailoverTimeout = -time.Second },
		"Voters":               func(c *cluster.Config) { c.Voters = -1 },
		"VoterGrace":           func(c *cluster.Config) { c.VoterGrace = -time.Second },
		"RaftTimeout":          func(c *cluster.Config) { c.RaftTimeout = -time.Second },
		"Gossip.ProbeInterval": func(c *cluster.Config) { c.Gossip.ProbeInterval = -time.Second },
		"Gossip.SuspicionMult": func(c *cluster.Config) { c.Gossip.SuspicionMult = -1 },
		"Ring.PartitionCount":  func(c *cluster.Config) { c.Ring.PartitionCount = -1 },
		"Ring.Load":            func(c *cluster.Config) { c.Ring.Load = -1 },
	} {
		var cfg cluster.Config
		set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), name+":") {
			t.Errorf("%s negative: %v, want an error naming it", name, err)
		}
	}
}

// TestInvalidStartWritesNothing: Start validates before it makes anything:
// a config it refuses leaves no generated cluster key in DataDir.
func TestInvalidStartWritesNothing(t *testing.T) {
	dir := t.TempDir()
	cfg := cluster.Config{GossipAddr: "127.0.0.1:0", DataDir: dir, MaxHits: -1, NodeName: "n1"}
	if n, err := cluster.Start(context.Background(), cfg); err == nil {
		n.Close(context.Background())
		t.Fatal("Start with a negative MaxHits succeeded")
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Fatalf("DataDir after a refused Start: %v %v, want it empty", entries, err)
	}
}
