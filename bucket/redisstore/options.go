package redisstore

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/vibewell/ratelimit/bucket"
)

// The errors New and the checks return. Every error from the backend (a
// network failure, a timeout, an error reply, an open breaker) also wraps
// bucket.ErrBackend, so callers that only tell backend failures from the rest
// test errors.Is(err, bucket.ErrBackend).
var (
	// ErrConfig is wrapped by errors in the Options: a malformed URL, a bad
	// prefix, metrics that cannot be registered.
	ErrConfig = errors.New("redisstore: invalid configuration")
	// ErrAuth is wrapped when Redis refuses the credentials (a wrong or
	// missing password, or a password the server does not expect).
	ErrAuth = errors.New("redisstore: authentication failed")
	// ErrUnavailable is wrapped when Redis cannot be reached or does not
	// answer within Options.Timeout, and by checks refused at once while the
	// circuit breaker is open.
	ErrUnavailable = errors.New("redisstore: redis unavailable")
	// ErrClosed is returned by checks on a closed Store.
	ErrClosed = errors.New("redisstore: store closed")
)

// DefaultURL is the Redis that a zero Options connects to.
const DefaultURL = "redis://127.0.0.1:6379/0"

// DefaultPrefix starts every key the Store writes.
const DefaultPrefix = "ratelimit:"

// callerTimeGrace is added to the expiry of every counter when the scripts
// use the caller's time: a caller whose clock runs slower than Redis's must
// not see a counter vanish before the caller's time reaches its idle point.
const callerTimeGrace = time.Minute

// Options configures a Store. The zero value connects to DefaultURL with the
// defaults below.
type Options struct {
	// URL locates Redis: redis://[[user]:password@]host[:port][/db], or
	// rediss://... for TLS. Query parameters of go-redis's ParseURL apply.
	// Default: DefaultURL.
	URL string
	// Addrs, when set, replaces the URL's host and port. Two or more
	// addresses (or Cluster) make a Redis Cluster client; with MasterName
	// they are Sentinel addresses. The URL still gives the credentials, the
	// database and TLS.
	Addrs []string
	// MasterName is the Sentinel master set name. Default: none (no
	// Sentinel).
	MasterName string
	// Cluster makes a Redis Cluster client even from a single address (a
	// cluster's configuration endpoint).
	Cluster bool
	// Password, when set, replaces the URL's password.
	Password string
	// TLS forces TLS with a redis:// URL. A rediss:// URL implies it.
	TLS bool
	// TLSConfig is the TLS configuration used when TLS is on. Default: the
	// system roots, TLS 1.2 or later, and the URL's host as server name.
	TLSConfig *tls.Config
	// Timeout bounds every check (dial, pool wait, write and read included)
	// and the start-up PING. Default: 5s.
	Timeout time.Duration
	// Prefix starts every key. It must not contain '{' or '}', which would
	// defeat the hash tag. Default: DefaultPrefix.
	Prefix string
	// UseCallerTime makes the scripts use the now passed to Take instead of
	// the Redis server's TIME. Default: false (server time, so app nodes
	// with skewed clocks decide alike). Tests and the conformance suite set
	// it. Counters then expire a minute after their idle time, so a caller
	// clock slower than Redis's never sees them vanish early.
	UseCallerTime bool
	// PoolSize is the number of connections kept per Redis node.
	// Default: 32 × GOMAXPROCS.
	PoolSize int
	// DisableAutoPipeline sends every check in its own round trip. By
	// default, a check that starts while others are in flight joins them in
	// a pipeline (go-redis's autopipeliner), which multiplies throughput
	// under concurrency; a lone check still goes straight out.
	DisableAutoPipeline bool
	// BreakerFailures is the number of consecutive backend failures that
	// open the circuit breaker: while it is open, checks fail at once with
	// ErrUnavailable instead of each waiting for Redis. Default: 3.
	BreakerFailures int
	// BreakerCooldown is how long the breaker stays open before one check
	// probes Redis again (half-open); its success closes the breaker.
	// Default: 500ms.
	BreakerCooldown time.Duration
	// LogInterval is the least time between two logged backend failures;
	// the ones in between are counted and reported with the next. Breaker
	// transitions are always logged. Default: 10s.
	LogInterval time.Duration
	// Logger receives failure and breaker logs. Default: discard.
	Logger *slog.Logger
	// Metrics, when set, receives the Store's collectors (never the global
	// registry). Close unregisters them.
	Metrics prometheus.Registerer
}

func (o Options) withDefaults() Options {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.PoolSize <= 0 {
		o.PoolSize = 32 * runtime.GOMAXPROCS(0)
	}
	if o.BreakerFailures <= 0 {
		o.BreakerFailures = 3
	}
	if o.BreakerCooldown <= 0 {
		o.BreakerCooldown = 500 * time.Millisecond
	}
	if o.LogInterval <= 0 {
		o.LogInterval = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// universal turns the options into go-redis options. It fails with
// ErrConfig on a malformed URL or prefix.
func (o Options) universal() (*redis.UniversalOptions, error) {
	if strings.ContainsAny(o.Prefix, "{}") {
		return nil, fmt.Errorf("%w: prefix %q must not contain '{' or '}'", ErrConfig, o.Prefix)
	}
	po, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: REDIS_URL %s: %v", ErrConfig, redactURL(o.URL), err)
	}
	if po.Network != "tcp" {
		return nil, fmt.Errorf("%w: REDIS_URL %s: only redis:// and rediss:// are supported", ErrConfig, redactURL(o.URL))
	}
	addrs := o.Addrs
	if len(addrs) == 0 {
		addrs = []string{po.Addr}
	}
	password := po.Password
	if o.Password != "" {
		password = o.Password
	}
	var tlsConfig *tls.Config
	switch {
	case po.TLSConfig == nil && !o.TLS:
	case o.TLSConfig != nil:
		tlsConfig = o.TLSConfig.Clone()
	case po.TLSConfig != nil:
		tlsConfig = po.TLSConfig
	default:
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if tlsConfig != nil && tlsConfig.ServerName == "" && len(o.Addrs) == 0 {
		if host, _, err := net.SplitHostPort(po.Addr); err == nil {
			tlsConfig.ServerName = host
		}
	}
	return &redis.UniversalOptions{
		Addrs:      addrs,
		DB:         po.DB,
		Username:   po.Username,
		Password:   password,
		MasterName: o.MasterName,
		// Sentinels usually share the password of the master set.
		SentinelPassword: password,
		IsClusterMode:    o.Cluster,
		TLSConfig:        tlsConfig,
		// A check is not idempotent: a retry after a lost reply could count
		// its hits twice. The node's failure mode handles a failed check.
		MaxRetries:            -1,
		DialTimeout:           o.Timeout,
		DialerRetries:         1,
		ReadTimeout:           o.Timeout,
		WriteTimeout:          o.Timeout,
		PoolTimeout:           o.Timeout,
		ContextTimeoutEnabled: true,
		PoolSize:              o.PoolSize,
		// Redis 7.0 knows neither CLIENT SETINFO nor maintenance
		// notifications; asking for them makes the server log errors.
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}, nil
}

// redactURL hides the password of a Redis URL, for error messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// scriptParams returns the Decision.Limit of p (whose Limit is resolved), and
// the script's algorithm code and its two parameters: the slot width, window
// or interval in microseconds, and the limit or capacity.
func scriptParams(p *bucket.Policy) (capacity, alg, a, b int64, ok bool) {
	w := p.Window.Microseconds()
	if p.Limit < 1 || w < 1 {
		return 0, 0, 0, 0, false
	}
	switch p.Algorithm {
	case bucket.GCRA:
		capacity = p.Burst + 1
		return capacity, 1, w / p.Limit, capacity, w/p.Limit >= 1 && p.Burst >= 0
	case bucket.TokenBucket:
		capacity = p.Limit + p.Burst
		return capacity, 2, w / p.Limit, capacity, w/p.Limit >= 1 && p.Burst >= 0
	case bucket.FixedWindow:
		return p.Limit, 3, w, p.Limit, true
	case bucket.SlidingWindow:
		return p.Limit, 0, w / bucket.Slots, p.Limit, w/bucket.Slots >= 1
	}
	return 0, 0, 0, 0, false
}
