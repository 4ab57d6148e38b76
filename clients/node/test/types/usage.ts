// Compiled (never run) by test/types.test.js: the shipped types describe
// the API as the README uses it.
import {
  RateLimitClient,
  RateLimiterRatelimitd,
  RatelimitdStore,
  UnavailableError,
  edgeRateLimit,
  applyHeaders,
  expressRateLimit,
  type RateLimitResult,
} from '@vibewell/ratelimit';

const client = new RateLimitClient({ urls: ['http://127.0.0.1:8080'], token: 't', failureModes: { auth: 'closed' } });
const routed = new RateLimitClient({ urls: ['http://127.0.0.1:8080'], ownerAware: true, ringRefreshMs: 250 });
const version: Promise<string | null> = routed.refreshRing({ timeoutMs: 500 });
console.log(routed.ringVersion?.length, version);

async function use(request: Request): Promise<Response> {
  const r: RateLimitResult = await client.check('auth', 'ip:1', 1, { timeoutMs: 500 });
  const allowed: boolean = r.allowed && r.remaining >= 0 && r.resetAfterMs >= 0 && r.retryAfterMs >= 0;
  if (r.fallback === 'closed' && r.error instanceof UnavailableError) console.log(r.error.errors.length);
  await client.peek('auth', 'k');
  await client.reset('auth', 'k');
  await client.refund('auth', 'k', 2);
  const batch = await client.checkBatch([{ policy: 'default', key: 'u' }]);
  console.log(batch.length, allowed);

  const limit = edgeRateLimit({ client, policy: 'auth', key: (req) => req.headers.get('x-forwarded-for') });
  const { response, headers } = await limit(request);
  return response ?? applyHeaders(new Response('ok'), headers);
}

const mw = expressRateLimit({ client, policy: 'default', key: (req: { ip: string }) => `ip:${req.ip}` });
const limiter = new RateLimiterRatelimitd({ client, policy: 'auth', keyPrefix: 'login', points: 10, duration: 900 });
limiter.consume('k', 1).then((res) => res.remainingPoints, (rej) => rej.msBeforeNext);
const store = new RatelimitdStore({ client, policy: 'default' });
store.increment('k').then((info) => info.totalHits);
console.log(use, mw);
