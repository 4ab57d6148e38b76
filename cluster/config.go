package cluster

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vibewell/ratelimit/bucket"
)

// Config configures a Node. The zero value runs a single node with the
// default policies; every zero field takes the default in its comment.
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
	// MemoryConfig{}.
	Store bucket.Store
	// Clock tells the time. Default: the system clock, read once per
	// ClockResolution rather than on every check.
	Clock bucket.Clock
	// ClockResolution is the tick of the default clock: checks see time in
	// steps of this size, lagging real time by about one step, which only
	// makes limits stricter. Negative reads the system clock on every check.
	// Ignored when Clock is set. Default: 1ms.
	ClockResolution time.Duration
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
	// MaxKeyLen bounds the length of a key, in bytes. Default: 512.
	MaxKeyLen int
	// MaxHits bounds the hits of one check. Default: 1,000,000.
	MaxHits int64
	// SweepInterval is how often idle counters are dropped. Default: 1 minute.
	SweepInterval time.Duration
}

// Defaults for Config fields.
const (
	DefaultMaxKeyLen       = 512
	DefaultMaxHits         = 1_000_000
	DefaultSweepInterval   = time.Minute
	DefaultDenialLogRate   = 10
	DefaultClockResolution = time.Millisecond
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
	if c.Store == nil {
		c.Store = bucket.NewMemoryStore(bucket.MemoryConfig{})
	}
	if c.ClockResolution == 0 {
		c.ClockResolution = DefaultClockResolution
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
	return c
}

// Validate reports the first invalid field of c (after defaults apply).
func (c Config) Validate() error {
	c = c.withDefaults()
	if _, err := newPolicyTable(c.Policies, false, nil); err != nil {
		return fmt.Errorf("cluster: config: Policies: %w", err)
	}
	return nil
}
