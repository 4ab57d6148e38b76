// RateLimitClient: checks, batches, peeks, resets and refunds against a set
// of ratelimitd nodes, with failover, per-call timeouts and the policy's
// failure mode when no node answers. Web APIs only (fetch, AbortController,
// timers), so the same client runs in Node.js and on the Edge runtime.

import {
  BadRequestError,
  ForbiddenError,
  RateLimitError,
  StatusError,
  TimeoutError,
  UnavailableError,
} from './errors.js';
import { pickHeaders } from './headers.js';
import { ownerOf, parseRing } from './ring.js';

const DEFAULTS = {
  timeoutMs: 1000,
  attemptTimeoutMs: 250,
  downForMs: 2000,
  healthIntervalMs: 5000,
  policiesTtlMs: 60_000,
  defaultFailureMode: 'open',
  ownerAware: false,
  ringRefreshMs: 100,
};

// The answer header that names the ring version a node routes by.
const RING_HEADER = 'ratelimit-ring';
// The largest GET /v1/ring body the client reads (a 4,099-partition table
// of a few hundred members is well under it).
const MAX_RING_BODY = 4 << 20;

const MODES = new Set(['open', 'closed']);

// readLimited reads a response's body as text, or returns null (and stops
// reading) once it is longer than max bytes.
async function readLimited(res, max) {
  if (Number(res.headers.get('content-length')) > max || !res.body) {
    await res.body?.cancel();
    return res.body ? null : '';
  }
  const reader = res.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > max) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  return new TextDecoder().decode(all);
}

function envAddr() {
  const p = globalThis.process;
  return p && p.env ? p.env.RATELIMIT_ADDR : undefined;
}

function toResult(body, headers) {
  return {
    allowed: body.allowed,
    policy: body.policy,
    limit: body.limit,
    remaining: body.remaining,
    resetAfterMs: body.reset_after_ms,
    retryAfterMs: body.retry_after_ms,
    headers,
  };
}

function checkArgs(policy, key, hits) {
  if (typeof policy !== 'string' || policy === '') throw new TypeError('policy must be a non-empty string');
  if (typeof key !== 'string' || key === '') throw new TypeError('key must be a non-empty string');
  if (!Number.isSafeInteger(hits) || hits < 0) throw new TypeError(`hits must be a non-negative integer, got ${hits}`);
}

function statusError(status, body) {
  const msg = (body && body.error) || `HTTP ${status}`;
  const field = body && body.field;
  if (status === 400) return new BadRequestError(status, msg, field);
  if (status === 403) return new ForbiddenError(status, msg, field);
  return new StatusError(status, msg, field);
}

/**
 * A client of one or more ratelimitd nodes. Every node of a cluster answers
 * every check, so the client sends each call to one node, the next one
 * after the last it used that is not marked down, and fails over to the
 * others when a node refuses the connection, times out or answers 5xx. A
 * node that failed is marked down for downForMs and probed on /readyz in
 * the background.
 *
 * With ownerAware, the client also reads the cluster's ring (GET /v1/ring)
 * and sends each check, reset and refund to its key's owner first, so that
 * no node has to forward it; it reads the ring again when an answer names
 * another version (the Ratelimit-Ring header), at most once per
 * ringRefreshMs. A node reached with a stale ring forwards the check to
 * the owner it knows, so the decision is the same.
 */
export class RateLimitClient {
  #nodes;
  #next = 0;
  #opts;
  #fetch;
  #policies = null; // name → policy of GET /v1/policies
  #policiesAt = 0;
  #loading = null;
  #timer = null;
  #ring = null; // the parsed GET /v1/ring, with ownerAware
  #ringAt = 0; // when the last read of the ring started
  #ringLoading = null;
  #ringNodes = new Map(); // url → node of the ring's members not in urls

  constructor(options = {}) {
    const o = { ...DEFAULTS, ...options };
    let urls = o.urls ?? (o.url ? [o.url] : undefined);
    if (!urls) {
      const env = envAddr();
      urls = env ? env.split(',') : ['http://127.0.0.1:8080'];
    }
    if (!Array.isArray(urls) || urls.length === 0) throw new TypeError('urls must list at least one node');
    this.#nodes = urls.map((u) => {
      const url = String(u).trim().replace(/\/+$/, '');
      if (!/^https?:\/\//.test(url)) throw new TypeError(`node URL ${u}: want http:// or https://`);
      return { url, downUntil: 0, lastError: null };
    });
    for (const k of ['timeoutMs', 'attemptTimeoutMs', 'downForMs', 'healthIntervalMs', 'policiesTtlMs', 'ringRefreshMs']) {
      if (!Number.isFinite(o[k]) || o[k] < 0) throw new TypeError(`${k} must be a non-negative number`);
    }
    if (!MODES.has(o.defaultFailureMode)) throw new TypeError(`defaultFailureMode must be open or closed`);
    for (const [p, m] of Object.entries(o.failureModes ?? {})) {
      if (!MODES.has(m)) throw new TypeError(`failureModes.${p} must be open or closed`);
    }
    this.#opts = o;
    this.#fetch = o.fetch ?? globalThis.fetch.bind(globalThis);
    if (o.healthIntervalMs > 0 && this.#nodes.length > 1) {
      this.#timer = setInterval(() => void this.#probeDown(), o.healthIntervalMs);
      this.#timer.unref?.();
    }
  }

  /** The node URLs, in order. */
  get urls() {
    return this.#nodes.map((n) => n.url);
  }

  /** The version of the ring checks are routed by (ownerAware), or null before it is read. */
  get ringVersion() {
    return this.#ring ? this.#ring.version : null;
  }

  /**
   * refreshRing reads the ring from the nodes now (the first that answers),
   * and resolves to its version, or null when no node served it (checks
   * then go to any node). With ownerAware the client reads it on its first
   * call by itself; this makes the first calls one hop too.
   */
  async refreshRing(options = {}) {
    await this.#loadRing(null, options);
    return this.ringVersion;
  }

  /** Stops the background health probes. */
  close() {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /**
   * check takes hits (default 1) from the counter of key under policy. A
   * denial is a result with allowed false, not an error. When no node
   * answers, the policy's failure mode decides (result.fallback says so).
   */
  async check(policy, key, hits = 1, options = {}) {
    checkArgs(policy, key, hits);
    this.#refreshPolicies();
    try {
      const r = await this.#request('POST', '/v1/check', { policy, key, hits }, options, [200, 429], this.#owner(policy, key));
      return toResult(r.body, pickHeaders(r.headers));
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      return this.#fallback(policy, key, hits, err);
    }
  }

  /** peek says whether one hit would pass, without taking any. */
  peek(policy, key, options = {}) {
    return this.check(policy, key, 0, options);
  }

  /**
   * checkBatch decides many checks in one request, in order. Each item is a
   * result, or {error, status, field} for a check the server refused.
   * When no node answers, each check's policy's failure mode decides. With
   * ownerAware, it sends one batch to each owner of the checks' keys, at
   * once.
   */
  async checkBatch(checks, options = {}) {
    if (!Array.isArray(checks)) throw new TypeError('checks must be an array');
    const items = checks.map((c) => {
      const hits = c.hits ?? 1;
      checkArgs(c.policy, c.key, hits);
      return { policy: c.policy, key: c.key, hits };
    });
    this.#refreshPolicies();
    // With ownerAware, the checks are split by owner: one batch to each
    // owner, sent at once, the answers put back in order.
    const groups = new Map(); // owner node (or null: any node) → indexes
    items.forEach((c, i) => {
      const owner = this.#owner(c.policy, c.key);
      if (!groups.has(owner)) groups.set(owner, []);
      groups.get(owner).push(i);
    });
    const out = new Array(items.length);
    await Promise.all(
      [...groups].map(async ([owner, idx]) => {
        const part = idx.map((i) => items[i]);
        let results;
        try {
          const r = await this.#request('POST', '/v1/check/batch', { checks: part }, options, [200], owner);
          if (!Array.isArray(r.body.results) || r.body.results.length !== part.length) throw new RateLimitError('check/batch: the answer does not have a result per check');
          results = r.body.results.map((x) => (x.error ? { error: x.error, status: x.status, field: x.field } : toResult(x)));
        } catch (err) {
          if (!(err instanceof UnavailableError)) throw err;
          results = part.map((c) => this.#fallback(c.policy, c.key, c.hits, err));
        }
        idx.forEach((i, j) => {
          out[i] = results[j];
        });
      }),
    );
    return out;
  }

  /**
   * reset makes the counter of key under policy fresh again, and returns the
   * decision a peek then gets. It needs the client (or admin) token.
   */
  async reset(policy, key, options = {}) {
    checkArgs(policy, key, 0);
    const r = await this.#request('POST', '/v1/reset', { policy, key }, { ...options, once: true }, [200], this.#owner(policy, key));
    return toResult(r.body);
  }

  /**
   * refund gives hits (default 1) back to the counter of key under policy,
   * never below a fresh counter, and returns the decision a peek then gets.
   * It needs the client (or admin) token.
   */
  async refund(policy, key, hits = 1, options = {}) {
    checkArgs(policy, key, hits);
    if (hits < 1) throw new TypeError('a refund gives back at least 1 hit');
    const r = await this.#request('POST', '/v1/refund', { policy, key, hits }, { ...options, once: true }, [200], this.#owner(policy, key));
    return toResult(r.body);
  }

  /** resetBatch resets many counters in one request ({policy, key} items). */
  async resetBatch(resets, options = {}) {
    const items = resets.map((x) => (checkArgs(x.policy, x.key, 0), { policy: x.policy, key: x.key }));
    const r = await this.#request('POST', '/v1/reset/batch', { resets: items }, { ...options, once: true }, [200]);
    return r.body.results.map((x) => (x.error ? { error: x.error, status: x.status, field: x.field } : toResult(x)));
  }

  /** refundBatch gives hits back to many counters in one request ({policy, key, hits} items). */
  async refundBatch(refunds, options = {}) {
    const items = refunds.map((x) => {
      const hits = x.hits ?? 1;
      checkArgs(x.policy, x.key, hits);
      return { policy: x.policy, key: x.key, hits };
    });
    const r = await this.#request('POST', '/v1/refund/batch', { refunds: items }, { ...options, once: true }, [200]);
    return r.body.results.map((x) => (x.error ? { error: x.error, status: x.status, field: x.field } : toResult(x)));
  }

  /** policies returns the policy table of a node (GET /v1/policies). */
  async policies(options = {}) {
    const r = await this.#request('GET', '/v1/policies', undefined, options, [200]);
    this.#policies = new Map(r.body.policies.map((p) => [p.name, p]));
    this.#policiesAt = Date.now();
    return r.body.policies;
  }

  /**
   * health probes every node's /readyz and returns [{url, healthy, error}];
   * nodes that answer are marked up, the others down.
   */
  async health(options = {}) {
    const ms = options.timeoutMs ?? this.#opts.attemptTimeoutMs;
    return Promise.all(
      this.#nodes.map(async (n) => {
        try {
          const res = await this.#once(n, 'GET', '/readyz', undefined, ms, options.signal);
          await res.arrayBuffer();
          if (res.status !== 200) throw new StatusError(res.status, 'not ready');
          n.downUntil = 0;
          n.lastError = null;
          return { url: n.url, healthy: true };
        } catch (err) {
          this.#markDown(n, err);
          return { url: n.url, healthy: false, error: err.message };
        }
      }),
    );
  }

  // #fallback decides a check that no node answered by its policy's
  // failure mode, or rethrows.
  #fallback(policy, key, hits, err) {
    const p = this.#policies?.get(policy);
    let mode = this.#opts.failureModes?.[policy];
    if (!mode && p && MODES.has(p.failure_mode)) mode = p.failure_mode;
    mode ??= this.#opts.defaultFailureMode;
    let limit = p ? (p.overrides?.[key] ?? p.limit) : 0;
    if (p && p.algorithm === 'gcra') limit = (p.burst ?? 0) + 1;
    if (p && p.algorithm === 'token_bucket') limit += p.burst ?? 0;
    const base = { policy, limit, fallback: mode, error: err, windowMs: p ? p.window_ms : 0, policyLimit: p ? (p.overrides?.[key] ?? p.limit) : undefined };
    if (mode === 'open') {
      return { ...base, allowed: true, remaining: Math.max(0, limit - hits), resetAfterMs: 0, retryAfterMs: 0 };
    }
    return { ...base, allowed: false, remaining: 0, resetAfterMs: 1000, retryAfterMs: 1000 };
  }

  // #refreshPolicies loads the policy table in the background when it is
  // older than policiesTtlMs: it gives the failure modes and windows.
  #refreshPolicies() {
    if (this.#loading || Date.now() - this.#policiesAt < this.#opts.policiesTtlMs) return;
    this.#policiesAt = Date.now(); // one attempt per TTL, even a failed one
    this.#loading = this.policies()
      .catch(() => {})
      .finally(() => {
        this.#loading = null;
      });
  }

  // #order lists the nodes to try: first (the key's owner) if it is up,
  // then the others up, round robin, then those down.
  #order(first) {
    const now = Date.now();
    const n = this.#nodes.length;
    const start = this.#next++ % n;
    const up = [];
    const down = [];
    if (first) (first.downUntil > now ? down : up).push(first);
    for (let i = 0; i < n; i++) {
      const node = this.#nodes[(start + i) % n];
      if (node === first) continue;
      (node.downUntil > now ? down : up).push(node);
    }
    return up.concat(down);
  }

  // #owner returns the node of the owner of (policy, key) by the ring, or
  // null: not ownerAware, the ring not read yet (it is read now, in the
  // background), or the owner advertises no address a client can reach.
  #owner(policy, key) {
    if (!this.#opts.ownerAware) return null;
    const ring = this.#ring;
    if (!ring) {
      this.#ringSoon(null);
      return null;
    }
    const m = ownerOf(ring, policy, key);
    return m.url ? this.#nodeOf(m.url) : null;
  }

  // #nodeOf returns the node of url: one of urls, else one kept for the
  // ring's members (bounded by the ring, renewed with it).
  #nodeOf(url) {
    for (const n of this.#nodes) if (n.url === url) return n;
    let n = this.#ringNodes.get(url);
    if (!n) {
      n = { url, downUntil: 0, lastError: null };
      this.#ringNodes.set(url, n);
    }
    return n;
  }

  // #sawRing reads a node's ring version off its answer, and reads the
  // ring again, from that node first, when it is not the client's.
  #sawRing(node, headers) {
    if (!this.#opts.ownerAware || !headers) return;
    const v = headers.get(RING_HEADER);
    if (v && (!this.#ring || v !== this.#ring.version)) this.#ringSoon(node);
  }

  // #ringSoon reads the ring in the background, unless a read is running
  // or one started less than ringRefreshMs ago.
  #ringSoon(first) {
    if (this.#ringLoading || Date.now() - this.#ringAt < this.#opts.ringRefreshMs) return;
    void this.#loadRing(first, {});
  }

  // #loadRing reads GET /v1/ring from first, else from each node in turn,
  // and routes by it from then on. A read in flight is shared.
  #loadRing(first, options) {
    if (this.#ringLoading) return this.#ringLoading;
    this.#ringAt = Date.now();
    const scheme = new URL(this.#nodes[0].url).protocol;
    const ms = options.timeoutMs ?? this.#opts.attemptTimeoutMs;
    this.#ringLoading = (async () => {
      const tried = first ? [first, ...this.#nodes.filter((n) => n !== first)] : this.#nodes;
      for (const node of tried) {
        try {
          const res = await this.#once(node, 'GET', '/v1/ring', undefined, ms, options.signal);
          const text = await readLimited(res, MAX_RING_BODY);
          if (res.status !== 200 || text === null) continue;
          const ring = parseRing(JSON.parse(text), scheme);
          const urls = new Set(ring.members.map((m) => m.url));
          for (const url of this.#ringNodes.keys()) if (!urls.has(url)) this.#ringNodes.delete(url);
          this.#ring = ring;
          return;
        } catch {
          // the next node
        }
      }
    })().finally(() => {
      this.#ringLoading = null;
    });
    return this.#ringLoading;
  }

  #markDown(node, err) {
    node.downUntil = Date.now() + this.#opts.downForMs;
    node.lastError = err;
  }

  async #probeDown() {
    const now = Date.now();
    await Promise.all(
      this.#nodes
        .filter((n) => n.downUntil > now)
        .map(async (n) => {
          try {
            const res = await this.#once(n, 'GET', '/readyz', undefined, this.#opts.attemptTimeoutMs);
            await res.arrayBuffer();
            if (res.status === 200) n.downUntil = 0;
          } catch {
            // still down
          }
        }),
    );
  }

  // #once sends one request to one node within ms.
  async #once(node, method, path, body, ms, signal) {
    const ac = new AbortController();
    const timeout = new TimeoutError(node.url, ms);
    const timer = setTimeout(() => ac.abort(timeout), ms);
    const onAbort = () => ac.abort(signal.reason);
    if (signal) {
      if (signal.aborted) throw signal.reason;
      signal.addEventListener('abort', onAbort, { once: true });
    }
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.#opts.token) headers.Authorization = `Bearer ${this.#opts.token}`;
    try {
      return await this.#fetch(node.url + path, { method, headers, body, signal: ac.signal, keepalive: true });
    } catch (err) {
      if (ac.signal.reason === timeout) throw timeout;
      throw err;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  // #request sends a call to the nodes in turn until one answers with a
  // status below 500, within the call's timeout. Calls with once (resets,
  // refunds) are not sent again after a timeout, where the first node may
  // have made them.
  // first, when set, is the node tried first: the key's owner.
  async #request(method, path, payload, options, ok, first = null) {
    const timeoutMs = options.timeoutMs ?? this.#opts.timeoutMs;
    const attemptMs = Math.min(options.attemptTimeoutMs ?? this.#opts.attemptTimeoutMs, timeoutMs);
    const deadline = Date.now() + timeoutMs;
    const body = payload === undefined ? undefined : JSON.stringify(payload);
    const errors = [];
    for (const node of this.#order(first)) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      let res;
      try {
        res = await this.#once(node, method, path, body, Math.min(left, attemptMs), options.signal);
      } catch (err) {
        if (options.signal?.aborted) throw options.signal.reason;
        errors.push(err);
        this.#markDown(node, err);
        // The owner is gone or stuck: the ring may have changed.
        if (node === first) this.#ringSoon(null);
        if (options.once && err instanceof TimeoutError) break;
        continue;
      }
      let parsed = null;
      const text = await res.text();
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = null;
      }
      if (res.status >= 500) {
        const err = statusError(res.status, parsed);
        errors.push(err);
        this.#markDown(node, err);
        continue;
      }
      node.downUntil = 0;
      node.lastError = null;
      this.#sawRing(node, res.headers);
      if (!ok.includes(res.status)) throw statusError(res.status, parsed);
      if (parsed === null) throw new RateLimitError(`${node.url}${path}: answer is not JSON`);
      return { status: res.status, body: parsed, headers: res.headers };
    }
    const why = errors.map((e) => e.message).join('; ') || `no answer within ${timeoutMs} ms`;
    throw new UnavailableError(`no ratelimitd node answered ${method} ${path}: ${why}`, errors);
  }
}
