// Package redisstore is a bucket.Store that keeps the counters in Redis, for
// deployments that already run Redis and want every app node to share its
// limits there. It decides exactly as bucket.Take: every algorithm of the
// bucket package runs as one Lua script, loaded once and called by its SHA
// (EVALSHA), one round trip per check and atomic per key. Checks that start
// while others are in flight share pipelines (go-redis's autopipeliner), and
// TakeBatch sends a whole batch as one pipeline.
//
// # Keys
//
// The counter of bucket.Key{Policy, ID} lives under
//
//	<prefix>{<len(Policy) as a uvarint><Policy><ID>}
//
// with the prefix "ratelimit:" by default: the braces are a Redis Cluster
// hash tag, so the slot of a counter depends on its policy and ID alone.
// The value is a short packed string (8 to 52 bytes), and the key expires
// when the counter is back to a fresh one, so idle counters vanish by
// themselves.
//
// # Time
//
// By default the scripts read the Redis server's clock (TIME), so app nodes
// whose clocks disagree still decide alike; the now passed to Take is then
// ignored. Options.UseCallerTime makes them use the caller's now instead
// (tests, replays).
//
// # Failures
//
// A check never waits longer than Options.Timeout. After
// Options.BreakerFailures consecutive failures a circuit breaker opens and
// checks fail at once with ErrUnavailable; after Options.BreakerCooldown one
// check probes Redis, and its success closes the breaker. Every failure
// wraps bucket.ErrBackend, is counted in ratelimit_redis_errors_total and
// is logged at a capped rate. What a failed check decides is the caller's
// choice (the cluster node applies the policy's failure mode).
//
// # Usage
//
//	store, err := redisstore.New(ctx, redisstore.Options{
//		URL:      "rediss://redis.internal:6379/0",
//		Password: os.Getenv("REDIS_PASSWORD"),
//		Timeout:  5 * time.Second,
//	})
//	if err != nil {
//		return err // errors.Is(err, redisstore.ErrAuth), ErrUnavailable, ErrConfig
//	}
//	defer store.Close()
//	node, err := cluster.Start(ctx, cluster.Config{Store: store, SharedStore: true})
package redisstore
