package redisstore

import (
	"context"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/buckettest"
)

// clusterPort returns a free port p whose cluster bus port p+10000 is free
// too.
func clusterPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(20000)
		a, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return p
	}
	t.Fatal("no free port pair for a cluster node")
	return 0
}

// startCluster starts a Redis Cluster of three masters on loopback and
// returns their addresses.
func startCluster(t *testing.T) []string {
	t.Helper()
	requireRedisServer(t)
	var addrs []string
	for range 3 {
		s := &redisServer{t: t, port: clusterPort(t), dir: t.TempDir(),
			args: []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"}}
		s.start()
		t.Cleanup(s.stop)
		addrs = append(addrs, s.addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v: %s", err, out)
	}
	ctx := context.Background()
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a, DisableIdentity: true})
		waitFor(t, 20*time.Second, "cluster state ok at "+a, func() bool {
			return strings.Contains(c.ClusterInfo(ctx).Val(), "cluster_state:ok")
		})
		c.Close()
	}
	return addrs
}

// TestCluster runs the conformance suite, batches across slots and a
// script flush against a three-master Redis Cluster.
func TestCluster(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-cli is not installed: run `make test`, which installs Debian's redis-server (and redis-tools)")
	}
	addrs := startCluster(t)
	opts := func(o *Options) { o.Addrs = addrs; o.URL = "redis://" + addrs[0] }
	s := newTestStore(t, "", opts)
	if _, ok := s.client.(*redis.ClusterClient); !ok {
		t.Fatalf("client is %T, want a cluster client", s.client)
	}
	buckettest.RunStoreTests(t, func(t *testing.T) bucket.Store { return newTestStore(t, "", opts) })

	ctx := context.Background()
	p := bucket.Policy{Name: "p", Limit: 3, Window: time.Minute}
	checks := make([]bucket.Check, 0, 200)
	for i := range 50 {
		for range 4 {
			checks = append(checks, bucket.Check{Key: bucket.Key{Policy: "p", ID: "k" + strconv.Itoa(i)}, Policy: p, Hits: 1})
		}
	}
	cc := s.client.(*redis.ClusterClient)
	if err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		return c.ScriptFlush(ctx).Err()
	}); err != nil {
		t.Fatal(err)
	}
	out := make([]bucket.Decision, len(checks))
	if err := s.TakeBatch(ctx, checks, buckettest.Epoch, out); err != nil {
		t.Fatalf("batch over 50 keys on three masters after SCRIPT FLUSH: %v", err)
	}
	for i, d := range out {
		if want := i%4 < 3; d.Allowed != want {
			t.Fatalf("batch check %d: %+v, want allowed=%v", i, d, want)
		}
	}
	// Keys spread over the masters.
	var used atomic.Int64 // ForEachMaster calls in parallel
	_ = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		if c.DBSize(ctx).Val() > 0 {
			used.Add(1)
		}
		return nil
	})
	if used := used.Load(); used < 2 {
		t.Fatalf("counters on %d of 3 masters: the hash tag does not spread keys", used)
	}
}
