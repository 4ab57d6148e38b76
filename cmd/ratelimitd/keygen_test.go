package main

import (
	"strings"
	"testing"

	"github.com/vibewell/ratelimit/cluster"
)

// TestKeygen: keygen prints a new key that --cluster-key accepts.
func TestKeygen(t *testing.T) {
	code, out1, _ := runCmd(nil, "keygen")
	_, out2, _ := runCmd(nil, "keygen")
	k1, err := cluster.ParseClusterKey(out1)
	if code != exitOK || err != nil || len(k1) != cluster.ClusterKeySize {
		t.Fatalf("keygen: exit %d, %q: %v", code, out1, err)
	}
	if out1 == out2 {
		t.Error("two keygen runs printed the same key")
	}
	c, err := loadServeConfig(fakeInput([]string{"--cluster-key", strings.TrimSpace(out1)}, nil, nil))
	if err != nil || string(c.ClusterKey) != string(k1) {
		t.Errorf("--cluster-key of keygen's output: %v", err)
	}
	c, err = loadServeConfig(fakeInput(nil, map[string]string{"RATELIMIT_CLUSTER_KEY": out1}, nil))
	if err != nil || string(c.ClusterKey) != string(k1) {
		t.Errorf("RATELIMIT_CLUSTER_KEY of keygen's output: %v", err)
	}
	if code, _, _ := runCmd(nil, "keygen", "extra"); code != exitUsage {
		t.Errorf("keygen with an argument: exit %d, want 2", code)
	}
}

// TestClusterKeyErrors: a bad key, a joiner without one and an insecure
// cluster off loopback exit 2 with a message naming the setting; the bad
// key is never repeated.
func TestClusterKeyErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
		not  string
	}{
		{[]string{"serve", "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--cluster-key", "c2VjcmV0LXRvby1zaG9ydA"}, "--cluster-key", "c2VjcmV0LXRvby1zaG9ydA"},
		{[]string{"serve", "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--join", "127.0.0.1:1"}, "--cluster-key", ""},
		{[]string{"serve", "--http-addr", "127.0.0.1:0", "--gossip-addr", "0.0.0.0:0", "--insecure-cluster"}, "--gossip-addr", ""},
		{[]string{"serve", "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--join", "10.0.0.1:7946", "--insecure-cluster"}, "--join", ""},
		{[]string{"serve", "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--insecure-cluster", "--cluster-key", testClusterKey}, "insecure", testClusterKey},
	}
	for _, tt := range tests {
		code, _, stderr := runCmd(nil, tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) || tt.not != "" && strings.Contains(stderr, tt.not) {
			t.Errorf("%v: exit %d, stderr %q; want 2 naming %s", tt.args[1:], code, stderr, tt.want)
		}
	}
}

// TestJoinCommand: the logged command line joins the cluster from the same
// host on the next ports, or says what to fill in on another host.
func TestJoinCommand(t *testing.T) {
	if got := joinCommand("127.0.0.1:7946", "127.0.0.1:8080", "K"); got != "ratelimitd serve --join 127.0.0.1:7946 --cluster-key K --gossip-addr 127.0.0.1:7956 --http-addr 127.0.0.1:8081" {
		t.Errorf("loopback: %q", got)
	}
	if got := joinCommand("10.0.0.1:7946", "10.0.0.1:8080", "K"); !strings.HasPrefix(got, "ratelimitd serve --join 10.0.0.1:7946 --cluster-key K --gossip-addr <this host") {
		t.Errorf("another host: %q", got)
	}
}
