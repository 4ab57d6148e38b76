package raftbolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors returned by Store. Test them with errors.Is.
var (
	// ErrKeyNotFound is returned by Get and GetUint64 for a key that was never
	// set. Its text is exactly "not found", without the package prefix,
	// because raft recognises a missing stable key by comparing err.Error()
	// with that string.
	ErrKeyNotFound = errors.New("not found")

	// ErrLocked is returned by Open when another process (or another Store
	// in this process) holds the file and does not let go within
	// Options.LockTimeout.
	ErrLocked = errors.New("raftbolt: file is locked by another process or store")

	// ErrCorrupt is returned when a stored value cannot be decoded.
	ErrCorrupt = errors.New("raftbolt: corrupt value")

	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("raftbolt: store closed")

	// ErrInvalidOptions is returned by Open for options it cannot use.
	ErrInvalidOptions = errors.New("raftbolt: invalid options")
)

// Bucket names inside the bbolt file.
var (
	bucketLogs   = []byte("logs")
	bucketStable = []byte("stable")
)

// Options configures Open. The zero value is ready for production use.
type Options struct {
	// NoSync skips the fsync after each write transaction. A crash may then
	// lose acknowledged entries or the current term and vote, which breaks
	// raft's safety: use it in tests only. Default: false (fsync every write).
	NoSync bool

	// Mode is the permission of a newly created file. Default: 0o600.
	Mode os.FileMode

	// LockTimeout bounds how long Open waits for the file lock held by
	// another store before it fails with ErrLocked. Default: 1s. Negative
	// values are invalid.
	LockTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Mode == 0 {
		o.Mode = 0o600
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = time.Second
	}
	return o
}

// Store is a raft.LogStore and raft.StableStore kept in one bbolt file.
//
// Log entries live in one bucket keyed by their index as a big-endian uint64,
// so keys sort in index order; stable keys live in a second bucket. Every
// write is one bbolt transaction, made durable by fsync before it returns
// (unless Options.NoSync).
//
// Store is safe for concurrent use. The zero value is not usable: call Open.
type Store struct {
	db   *bolt.DB
	path string
}

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

// Open opens the store in the file at path, creating the file (but not its
// directory) if it does not exist. Only one Store may have a file open at a
// time: a second Open of the same file waits up to Options.LockTimeout and
// then fails with ErrLocked.
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout < 0 {
		return nil, fmt.Errorf("%w: LockTimeout %v is negative", ErrInvalidOptions, opts.LockTimeout)
	}
	opts = opts.withDefaults()
	db, err := bolt.Open(path, opts.Mode, &bolt.Options{
		Timeout: opts.LockTimeout,
		NoSync:  opts.NoSync,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %v)", ErrLocked, path, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("raftbolt: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketLogs, bucketStable} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("raftbolt: open %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Path returns the path of the file the store was opened on.
func (s *Store) Path() string { return s.path }

// Close closes the file and releases its lock, after waiting for the
// transactions in progress. Calls after the first return nil.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("raftbolt: close %s: %w", s.path, err)
	}
	return nil
}

// FirstIndex returns the index of the oldest log entry, or 0 if there is none.
func (s *Store) FirstIndex() (uint64, error) {
	var first uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().First(); k != nil {
			first = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return first, wrap("first index", err)
}

// LastIndex returns the index of the newest log entry, or 0 if there is none.
func (s *Store) LastIndex() (uint64, error) {
	var last uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().Last(); k != nil {
			last = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return last, wrap("last index", err)
}

// GetLog reads the entry at index into log, overwriting all its fields. It
// returns raft.ErrLogNotFound (unwrapped, as raft compares it with ==) if
// there is no entry at index. The slices in log are owned by the caller.
func (s *Store) GetLog(index uint64, log *raft.Log) error {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], index)
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLogs).Get(key[:])
		if v == nil {
			return nil
		}
		found = true
		return decodeLog(index, v, log)
	})
	if err != nil {
		return wrap("get log", err)
	}
	if !found {
		return raft.ErrLogNotFound
	}
	return nil
}

// StoreLog stores one log entry, replacing any entry at the same index.
func (s *Store) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores the entries in one transaction: either all are stored or
// none. An entry replaces any entry at the same index; indexes need not be
// contiguous with the entries already stored.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	// bbolt keeps references to keys and values until the transaction
	// commits, so each gets its own part of two slabs allocated once.
	size := 0
	for _, l := range logs {
		size += encodedLen(l)
	}
	keys := make([]byte, 0, 8*len(logs))
	vals := make([]byte, 0, size)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		for _, l := range logs {
			k := len(keys)
			keys = binary.BigEndian.AppendUint64(keys, l.Index)
			v := len(vals)
			vals = appendLog(vals, l)
			if err := b.Put(keys[k:len(keys):len(keys)], vals[v:len(vals):len(vals)]); err != nil {
				return fmt.Errorf("log %d: %w", l.Index, err)
			}
		}
		return nil
	})
	return wrap("store logs", err)
}

// DeleteRange deletes the entries with indexes from first to last, both
// included. Missing entries in the range are not an error.
func (s *Store) DeleteRange(first, last uint64) error {
	if first > last {
		return nil
	}
	var start [8]byte
	binary.BigEndian.PutUint64(start[:], first)
	err := s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLogs).Cursor()
		for k, _ := c.Seek(start[:]); k != nil && binary.BigEndian.Uint64(k) <= last; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("delete range", err)
}

// Set stores val under key in the stable bucket. An empty key is an error.
func (s *Store) Set(key, val []byte) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketStable).Put(key, val)
	})
	return wrap("set", err)
}

// Get returns a copy of the value stored under key, or nil and
// ErrKeyNotFound if the key was never set. A value set to an empty slice
// reads back as an empty, non-nil slice.
func (s *Store) Get(key []byte) ([]byte, error) {
	var val []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketStable).Get(key); v != nil {
			val = append(make([]byte, 0, len(v)), v...)
		}
		return nil
	})
	if err != nil {
		return nil, wrap("get", err)
	}
	if val == nil {
		return nil, ErrKeyNotFound
	}
	return val, nil
}

// SetUint64 stores val under key as 8 big-endian bytes. Set and SetUint64
// share one key space.
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns the value stored under key by SetUint64. For a key that
// was never set it returns 0 and ErrKeyNotFound, which raft reads as 0 (no
// term, no vote yet). A value that is not 8 bytes long is ErrCorrupt.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: key %q holds %d bytes, not a uint64", ErrCorrupt, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// wrap prefixes err with the package and operation, and turns bbolt's
// closed-database error into ErrClosed. It returns nil for nil.
func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("raftbolt: %s: %w", op, ErrClosed)
	case errors.Is(err, ErrCorrupt):
		return err
	default:
		return fmt.Errorf("raftbolt: %s: %w", op, err)
	}
}
