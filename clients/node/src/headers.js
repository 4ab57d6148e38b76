// The rate-limit headers of a decision, as ratelimitd sets them.

/** Header names, in the case the server writes them. */
export const HEADER_NAMES = Object.freeze([
  'RateLimit-Policy',
  'RateLimit',
  'X-RateLimit-Limit',
  'X-RateLimit-Remaining',
  'X-RateLimit-Reset',
  'Retry-After',
]);

const ceilSeconds = (ms) => (ms > 0 ? Math.ceil(ms / 1000) : 0);

function sfString(s) {
  let out = '"';
  for (const ch of String(s)) {
    const c = ch.codePointAt(0);
    if (ch === '"' || ch === '\\') out += '\\' + ch;
    else if (c < 0x20 || c > 0x7e) out += '?';
    else out += ch;
  }
  return out + '"';
}

/**
 * rateLimitHeaders returns the headers of a result: the server's own when
 * the result came from a node (result.headers), else the same headers
 * computed from the result. RateLimit-Policy needs the policy's window,
 * known from the node's policy table; without it, it is left out.
 */
export function rateLimitHeaders(result) {
  if (result.headers && result.headers['X-RateLimit-Limit'] !== undefined) {
    const h = { ...result.headers };
    if (result.allowed) delete h['Retry-After'];
    return h;
  }
  const h = {};
  if (result.windowMs > 0) {
    h['RateLimit-Policy'] = `${sfString(result.policy)};q=${result.policyLimit ?? result.limit};w=${ceilSeconds(result.windowMs)}`;
  }
  h['RateLimit'] = `${sfString(result.policy)};r=${result.remaining};t=${ceilSeconds(result.resetAfterMs)}`;
  h['X-RateLimit-Limit'] = String(result.limit);
  h['X-RateLimit-Remaining'] = String(result.remaining);
  h['X-RateLimit-Reset'] = String(ceilSeconds(result.resetAfterMs));
  if (!result.allowed) h['Retry-After'] = String(Math.max(1, ceilSeconds(result.retryAfterMs)));
  return h;
}

/** pickHeaders reads the rate-limit headers of a fetch Response. */
export function pickHeaders(headers) {
  const out = {};
  for (const name of HEADER_NAMES) {
    const v = headers.get(name);
    if (v !== null) out[name] = v;
  }
  return out;
}
