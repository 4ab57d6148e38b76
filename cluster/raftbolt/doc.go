// Package raftbolt is a raft.LogStore and raft.StableStore for
// github.com/hashicorp/raft, kept in one bbolt file.
//
// It stands in for raft-boltdb, which does not build with raft v1.8: the log
// and the stable keys (current term, last vote) of one raft server live in
// two buckets of a single file, and every write is one transaction that is
// on disk (fsync) before the call returns.
//
// # Usage
//
//	store, err := raftbolt.Open(filepath.Join(dataDir, "raft.db"), raftbolt.Options{})
//	if err != nil { ... } // errors.Is(err, raftbolt.ErrLocked): another process runs on this data dir
//	defer store.Close() // after raft.Shutdown().Error()
//
//	snaps, err := raft.NewFileSnapshotStoreWithLogger(dataDir, 2, logger)
//	r, err := raft.NewRaft(conf, fsm, store, store, snaps, transport)
//
// The same Store is passed as both the log store and the stable store.
// Wrapping it in raft.NewLogCache saves reads of recent entries when the
// leader replicates them.
//
// # Layout and format
//
// Log entries are keyed by their index as a big-endian uint64, so a cursor
// walks them in index order; FirstIndex and LastIndex are the first and last
// keys. A value is a compact binary encoding of every field of raft.Log
// (Type, Term, Index, AppendedAt, Data, Extensions) that starts with a format
// version byte; an entry reads back exactly as it was stored, a nil slice
// apart from an empty one. Stable keys are stored as given; SetUint64 writes
// 8 big-endian bytes.
//
// # Errors raft relies on
//
// GetLog of a missing index returns raft.ErrLogNotFound itself, not wrapped.
// Get and GetUint64 of a missing key return ErrKeyNotFound, whose text is
// exactly "not found": raft recognises a missing term or vote by comparing
// err.Error() with that string, and reads it as 0 / no vote. Other errors
// are prefixed "raftbolt:" and wrap ErrClosed, ErrCorrupt or bbolt's error.
//
// # Concurrency and durability
//
// A Store is safe for concurrent use: bbolt serialises writers and lets
// readers run alongside them. Only one Store may hold a file: Open takes an
// exclusive lock on it, and a second Open (in this or another process) fails
// with ErrLocked after Options.LockTimeout (1s by default) instead of
// waiting forever. Options.NoSync drops the fsync, which makes writes about
// 10x to 50x cheaper on an ordinary disk but lets a crash lose entries and
// votes that raft believes are safe: it is for tests only.
package raftbolt
