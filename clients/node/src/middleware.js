// Middleware for Express/Connect and for the Edge runtime (Next.js
// middleware.ts), setting the rate-limit headers the server sets.

import { rateLimitHeaders } from './headers.js';

function denialBody(result) {
  return JSON.stringify({
    allowed: false,
    policy: result.policy,
    limit: result.limit,
    remaining: result.remaining,
    reset_after_ms: result.resetAfterMs,
    retry_after_ms: result.retryAfterMs,
  });
}

function options(o) {
  if (!o || !o.client) throw new TypeError('client is required');
  if (typeof o.policy !== 'string' || o.policy === '') throw new TypeError('policy is required');
  if (typeof o.key !== 'function') throw new TypeError('key must be a function of the request');
  return { hits: 1, ...o };
}

/**
 * expressRateLimit returns Express/Connect middleware that checks each
 * request against policy, for the key that key(req) returns (a string, or
 * a promise of one; null or undefined skips the check). Every checked
 * response gets the RateLimit headers; a denied request is answered 429
 * with Retry-After and a JSON body, as the server's own middleware does.
 * req.rateLimit holds the result. A check that throws (a bad policy, or
 * no node and no failure mode) goes to next(err).
 */
export function expressRateLimit(o) {
  const { client, policy, key, hits } = options(o);
  return async function rateLimit(req, res, next) {
    let result;
    try {
      const k = await key(req);
      if (k === null || k === undefined) return next();
      result = await client.check(policy, String(k), typeof hits === 'function' ? await hits(req) : hits);
    } catch (err) {
      return next(err);
    }
    req.rateLimit = result;
    for (const [name, value] of Object.entries(rateLimitHeaders(result))) res.setHeader(name, value);
    if (result.allowed) return next();
    res.statusCode = 429;
    res.setHeader('Content-Type', 'application/json');
    res.end(denialBody(result) + '\n');
  };
}

/**
 * edgeRateLimit returns a function of a Web Request, for Next.js
 * middleware.ts (the Edge runtime) or any fetch-style handler. It resolves
 * to {result, headers, response}: headers is a Headers of the RateLimit
 * headers, and response is the 429 Response to return when the request is
 * denied, else null (then pass headers on with applyHeaders).
 */
export function edgeRateLimit(o) {
  const { client, policy, key, hits } = options(o);
  return async function rateLimit(request) {
    const k = await key(request);
    if (k === null || k === undefined) return { result: null, headers: new Headers(), response: null };
    const result = await client.check(policy, String(k), typeof hits === 'function' ? await hits(request) : hits);
    const headers = new Headers(rateLimitHeaders(result));
    let response = null;
    if (!result.allowed) {
      const h = new Headers(headers);
      h.set('Content-Type', 'application/json');
      response = new Response(denialBody(result) + '\n', { status: 429, headers: h });
    }
    return { result, headers, response };
  };
}

/** applyHeaders copies headers onto response and returns it. */
export function applyHeaders(response, headers) {
  for (const [name, value] of headers) response.headers.set(name, value);
  return response;
}
