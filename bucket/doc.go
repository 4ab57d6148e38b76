// Package bucket holds the rate-limiting algorithms, the policy and decision
// types, and the in-memory counter store.
//
// Every algorithm is a pure function of (policy, state, hits, now): it takes
// no locks, reads no clock and does no I/O, so the memory store, the Redis
// adapter and the cluster's owner nodes all decide the same way. Time is
// computed in whole microseconds, which the Redis scripts can represent
// exactly too.
//
// # Algorithms
//
//   - SlidingWindow (the default for "N per window"): the window is split into
//     eight slots; a check counts every hit in the slots that overlap the
//     rolling window (now-window, now]. It never admits more than the limit in
//     any rolling window; a hit stays counted for at most window × 9/8.
//   - GCRA: nginx limit_req semantics with nodelay: limit per window is the
//     rate, and burst+1 checks may pass at once.
//   - TokenBucket: a bucket of limit+burst tokens refilled at limit per
//     window, computed in its exact virtual-scheduling form.
//   - FixedWindow: a counter per epoch-aligned window.
//
// # Usage
//
//	store := bucket.NewMemoryStore(bucket.MemoryConfig{})
//	p := bucket.Policy{Name: "auth", Limit: 10, Window: 15 * time.Minute}
//	d, err := store.Take(ctx, bucket.Key{Policy: p.Name, ID: "ip:1.2.3.4"}, p, 1, time.Now())
//	if err == nil && !d.Allowed {
//		// over the limit: retry after d.RetryAfter
//	}
package bucket
