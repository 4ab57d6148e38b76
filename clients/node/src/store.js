// An express-rate-limit Store backed by a ratelimitd policy.

import { RateLimitClient } from './client.js';

/**
 * RatelimitdStore is a Store for express-rate-limit: the counter lives in
 * the cluster under a ratelimitd policy, which decides. Options: client (a
 * RateLimitClient; or urls/url and token to make one), policy, and prefix
 * (default 'rl:', as rate-limit-redis). Set express-rate-limit's limit to
 * the policy's limit: the lower of the two applies.
 */
export class RatelimitdStore {
  #client;

  constructor(opts = {}) {
    if (typeof opts.policy !== 'string' || opts.policy === '') throw new TypeError('policy is required');
    this.#client = opts.client ?? new RateLimitClient(opts);
    this.policy = opts.policy;
    this.prefix = opts.prefix ?? 'rl:';
    /** The counters are shared by every process: not local to this one. */
    this.localKeys = false;
    this.limit = 0;
    this.windowMs = 60_000;
  }

  /** init is called by express-rate-limit with its options. */
  init(options) {
    if (typeof options.limit === 'number') this.limit = options.limit;
    if (typeof options.windowMs === 'number') this.windowMs = options.windowMs;
  }

  #key(key) {
    return this.prefix + key;
  }

  #info(r, totalHits) {
    return { totalHits, resetTime: new Date(Date.now() + (r.resetAfterMs || this.windowMs)) };
  }

  /** get returns the hits of key, or undefined when it has none. */
  async get(key) {
    const r = await this.#client.peek(this.policy, this.#key(key));
    if (r.remaining >= r.limit) return undefined;
    return this.#info(r, r.limit - r.remaining);
  }

  /**
   * increment takes one hit. A hit the policy denies is not counted by
   * ratelimitd; it is reported as one over express-rate-limit's limit, so
   * that the request is refused.
   */
  async increment(key) {
    const r = await this.#client.check(this.policy, this.#key(key), 1);
    if (r.allowed) return this.#info(r, r.limit - r.remaining);
    return this.#info(r, Math.max(r.limit, this.limit) + 1);
  }

  /** decrement gives one hit back (skipSuccessfulRequests, skipFailedRequests). */
  async decrement(key) {
    await this.#client.refund(this.policy, this.#key(key), 1);
  }

  /** resetKey resets the counter of key. */
  async resetKey(key) {
    await this.#client.reset(this.policy, this.#key(key));
  }
}
