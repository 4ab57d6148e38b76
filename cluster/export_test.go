package cluster

import "time"

// SetLegacyRaftCommit gives cfg raft's former timing: CommitTimeout d and
// no barrier after each change (benchmarks compare against it).
func SetLegacyRaftCommit(cfg *Config, d time.Duration) { cfg.legacyCommit = d }
