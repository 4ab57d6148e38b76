// A drop-in for rate-limiter-flexible's RateLimiterRedis, backed by a
// ratelimitd policy: the counter lives in the cluster, the limit in the
// policy. See the README for where a method cannot mean exactly the same.

import { RateLimitClient } from './client.js';

/** The result of a limiter call, with rate-limiter-flexible's RateLimiterRes shape. */
export class RateLimiterRes {
  constructor(remainingPoints = 0, msBeforeNext = 0, consumedPoints = 0, isFirstInDuration = false) {
    this.remainingPoints = remainingPoints;
    this.msBeforeNext = msBeforeNext;
    this.consumedPoints = consumedPoints;
    this.isFirstInDuration = Boolean(isFirstInDuration);
  }

  toJSON() {
    return {
      remainingPoints: this.remainingPoints,
      msBeforeNext: this.msBeforeNext,
      consumedPoints: this.consumedPoints,
      isFirstInDuration: this.isFirstInDuration,
    };
  }

  toString() {
    return JSON.stringify(this.toJSON());
  }
}

/**
 * RateLimiterRatelimitd has the interface of RateLimiterRedis: consume,
 * get, delete, reward, penalty, block. Options: client (a RateLimitClient;
 * or urls/url and token to make one), policy (the ratelimitd policy whose
 * limit applies), keyPrefix (default 'rlflx', as RateLimiterRedis), and
 * points and duration, which describe the policy (its limit and window in
 * seconds) for code that reads them; the policy's own values decide.
 */
export class RateLimiterRatelimitd {
  #client;

  constructor(opts = {}) {
    if (typeof opts.policy !== 'string' || opts.policy === '') throw new TypeError('policy is required');
    this.#client = opts.client ?? new RateLimitClient(opts);
    this.policy = opts.policy;
    this.keyPrefix = opts.keyPrefix ?? 'rlflx';
    this.points = opts.points ?? 4;
    this.duration = opts.duration ?? 1;
  }

  /** getKey returns the key sent to ratelimitd for key, prefixed as RateLimiterRedis prefixes it. */
  getKey(key) {
    return this.keyPrefix.length > 0 ? `${this.keyPrefix}:${key}` : String(key);
  }

  /**
   * consume takes points from key: it resolves with a RateLimiterRes when
   * they pass, and rejects with one when they do not (and with an Error
   * when no node answered and the policy's failure mode does not decide).
   */
  async consume(key, points = 1) {
    const r = await this.#client.check(this.policy, this.getKey(key), points);
    const before = r.allowed ? r.limit - r.remaining - points : r.limit - r.remaining;
    if (r.allowed) {
      return new RateLimiterRes(r.remaining, r.resetAfterMs, before + points, before === 0);
    }
    throw new RateLimiterRes(0, r.retryAfterMs, before + points, before === 0);
  }

  /** get resolves with the state of key, or null when it has consumed nothing. */
  async get(key) {
    const r = await this.#client.peek(this.policy, this.getKey(key));
    if (r.remaining >= r.limit) return null;
    return new RateLimiterRes(r.remaining, r.resetAfterMs, r.limit - r.remaining, false);
  }

  /** delete resets key; it resolves true when key had consumed points, else false. */
  async delete(key) {
    const k = this.getKey(key);
    const r = await this.#client.peek(this.policy, k);
    await this.#client.reset(this.policy, k);
    return r.remaining < r.limit;
  }

  /** reward gives points back to key, never below a fresh counter. */
  async reward(key, points = 1) {
    const r = await this.#client.refund(this.policy, this.getKey(key), points);
    return new RateLimiterRes(r.remaining, r.resetAfterMs, r.limit - r.remaining, false);
  }

  /**
   * penalty takes points from key and never rejects; points beyond the
   * limit fill the counter but are not carried over.
   */
  async penalty(key, points = 1) {
    const k = this.getKey(key);
    let r = await this.#client.check(this.policy, k, points);
    if (r.allowed) {
      const consumed = r.limit - r.remaining;
      return new RateLimiterRes(r.remaining, r.resetAfterMs, consumed, consumed === points);
    }
    const before = r.limit - r.remaining;
    if (r.remaining > 0) r = await this.#client.check(this.policy, k, r.remaining);
    const consumed = before + points;
    return new RateLimiterRes(Math.max(0, r.limit - consumed), r.resetAfterMs, consumed, before === 0);
  }

  /**
   * block fills the counter of key, so that it is denied until the
   * policy's window frees it: secDuration is not a time ratelimitd keeps.
   */
  async block(key, secDuration) {
    const k = this.getKey(key);
    let r = await this.#client.peek(this.policy, k);
    if (r.remaining > 0) r = await this.#client.check(this.policy, k, r.remaining);
    return new RateLimiterRes(0, r.resetAfterMs, r.limit + 1, false);
  }
}
