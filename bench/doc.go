// Package bench is the load harness of ratelimit: it measures how many
// checks a second a target decides, at what latency, and above all whether
// it ever admits more than the limit. `ratelimitd bench` is its command
// line; the package is usable on its own.
//
// # Targets
//
// A Target decides checks: Embedded (in-process cluster nodes, through
// node.Allow), HTTP (the check API of running nodes, single or batched
// checks), and StoreTarget (a bucket.Store directly, e.g. the Redis store).
// Spawn starts `ratelimitd serve` processes on free loopback ports for an
// HTTP run and always stops them: each is its own process group, receives
// SIGKILL if the bench dies (a parent-death signal), and Close stops them
// all.
//
// # Load
//
// A run sends checks with keys drawn uniformly from Keys keys, from a Zipf
// distribution (a few hot keys), or all to one hot key, Hits hits each,
// Batch checks a call. Closed loop: Concurrency callers, each sending its
// next call when the last returns. Open loop (Rate > 0): calls start on a
// fixed schedule and latency counts from the scheduled time, so a stall of
// the target delays every call scheduled during it and shows in the
// percentiles (no coordinated omission); when every caller is busy the
// generator records that it fell behind. Every run is bounded by Duration
// and by Requests (checks), whichever comes first, and stops by itself.
// The callers are set up before the clock starts; Warmup runs the same load
// first, on keys of its own and unmeasured, so that a run measures steady
// use rather than connections being dialled.
// Key choice is seeded (Config.Seed), so a run can be repeated.
//
// # Measures
//
// A Result holds decisions and calls a second, errors by kind, allowed and
// denied, call latency (p50, p90, p99, p99.9, max) from an HDR histogram,
// a per-second series (checks, allowed, denied, errors, p99), the
// scenario's events with the errors after each and the time to recover,
// and the accuracy: for a policy whose allowance per key is known exactly
// (a sliding window longer than the run: the limit; a fixed window: the
// limit in each window), the hits allowed above the allowance
// (over-admission) and the checks denied while it had room
// (under-admission); for rates (GCRA, token bucket) an upper bound. Result
// writes JSON (with the machine's description and the exact parameters),
// a summary table, and a self-contained HTML report; Compare prints two
// results side by side with ratios.
//
// # Usage
//
//	target, err := bench.NewHTTP(bench.HTTPConfig{URLs: []string{"http://127.0.0.1:8080"}})
//	if err != nil { ... }
//	defer target.Close(ctx)
//	res, err := bench.Run(ctx, bench.Config{
//		Target: target, Policy: "auth", PolicySpec: &authPolicy,
//		Concurrency: 64, Duration: 10 * time.Second,
//	})
//	if err != nil { ... }
//	res.WriteSummary(os.Stdout)
package bench
