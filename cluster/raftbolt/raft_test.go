package raftbolt

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// listFSM records every command it applies, in order.
type listFSM struct {
	mu       sync.Mutex
	entries  []string
	restores int
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, string(l.Data))
	return len(f.entries)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return listSnapshot(slices.Clone(f.entries)), nil
}

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var entries []string
	if err := json.NewDecoder(rc).Decode(&entries); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = entries
	f.restores++
	return nil
}

func (f *listFSM) state() (entries []string, restores int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.entries), f.restores
}

type listSnapshot []string

func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (listSnapshot) Release() {}

// node is one single-server raft on a Store and a file snapshot store in dir.
type node struct {
	raft  *raft.Raft
	store *Store
	fsm   *listFSM
}

const nodeID = "n1"

func startNode(t *testing.T, dir string) *node {
	t.Helper()
	store, err := Open(filepath.Join(dir, "raft.db"), Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	logger := hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Off})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger)
	if err != nil {
		t.Fatalf("NewFileSnapshotStore: %v", err)
	}
	// The same address on every start, as a restarted server keeps its own.
	_, trans := raft.NewInmemTransport(nodeID)

	conf := raft.DefaultConfig()
	conf.LocalID = nodeID
	conf.Logger = logger
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.SnapshotThreshold = 1 << 30 // snapshots only when the test asks
	conf.SnapshotInterval = time.Hour
	conf.TrailingLogs = 10

	fsm := &listFSM{}
	r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
	if err != nil {
		_ = store.Close()
		t.Fatalf("NewRaft: %v", err)
	}
	n := &node{raft: r, store: store, fsm: fsm}
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop shuts raft down and closes the store; it may be called twice.
func (n *node) stop(t *testing.T) {
	t.Helper()
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := n.store.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func (n *node) bootstrap() error {
	return n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: nodeID, Address: nodeID},
	}}).Error()
}

// waitLeader polls until the node leads, against a deadline.
func (n *node) waitLeader(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n.raft.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatalf("no leader within 10s; state %v", n.raft.State())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// apply applies the commands from..to-1 concurrently and checks each
// result: raft batches them into StoreLogs calls of several entries.
func (n *node) apply(t *testing.T, from, to int) {
	t.Helper()
	futures := make([]raft.ApplyFuture, 0, to-from)
	for i := from; i < to; i++ {
		futures = append(futures, n.raft.Apply([]byte(fmt.Sprintf("cmd-%d", i)), 5*time.Second))
	}
	for k, f := range futures {
		if err := f.Error(); err != nil {
			t.Fatalf("Apply(cmd-%d): %v", from+k, err)
		}
		if got, want := f.Response(), from+k+1; got != want {
			t.Fatalf("Apply(cmd-%d) response = %v, want FSM length %d", from+k, got, want)
		}
	}
}

// TestRaftRestart runs a single-server raft on the store, applies commands
// around a snapshot (which compacts the log through DeleteRange), restarts
// it on the same files, and checks the FSM comes back to the same state.
func TestRaftRestart(t *testing.T) {
	const before, after = 60, 40 // commands before and after the snapshot
	dir := t.TempDir()

	n := startNode(t, dir)
	if err := n.bootstrap(); err != nil {
		t.Fatalf("BootstrapCluster on first start: %v", err)
	}
	n.waitLeader(t)
	n.apply(t, 0, before)
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	n.apply(t, before, before+after)
	if err := n.raft.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
	want, _ := n.fsm.state()
	if len(want) != before+after {
		t.Fatalf("FSM holds %d entries, want %d", len(want), before+after)
	}
	// The snapshot let raft drop all but TrailingLogs entries before it.
	first, err := n.store.FirstIndex()
	if err != nil || first <= 1 {
		t.Errorf("FirstIndex after a snapshot = %d, %v; want the log compacted", first, err)
	}
	last, _ := n.store.LastIndex()
	term, err := n.store.GetUint64([]byte("CurrentTerm"))
	if err != nil || term == 0 {
		t.Errorf("GetUint64(CurrentTerm) = %d, %v; want the term raft wrote", term, err)
	}
	n.stop(t)

	// Restart on the same files.
	n = startNode(t, dir)
	if err := n.bootstrap(); !errors.Is(err, raft.ErrCantBootstrap) {
		t.Errorf("BootstrapCluster on restart = %v, want raft.ErrCantBootstrap", err)
	}
	n.waitLeader(t)
	if err := n.raft.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatalf("Barrier after restart: %v", err)
	}
	got, restores := n.fsm.state()
	if !slices.Equal(got, want) {
		t.Fatalf("FSM after restart holds %d entries, want the %d before it (first diff at %d)",
			len(got), len(want), firstDiff(got, want))
	}
	if restores != 1 {
		t.Errorf("FSM restored from %d snapshots on restart, want 1 (then the log replayed)", restores)
	}
	if term2, _ := n.store.GetUint64([]byte("CurrentTerm")); term2 <= term {
		t.Errorf("CurrentTerm after restart = %d, want above %d", term2, term)
	}

	// The log goes on from where it was.
	n.apply(t, before+after, before+after+1)
	if last2, _ := n.store.LastIndex(); last2 <= last {
		t.Errorf("LastIndex after an apply on restart = %d, want above %d", last2, last)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
