import assert from 'node:assert/strict';
import { test } from 'node:test';

import express from 'express';

import { applyHeaders, edgeRateLimit, expressRateLimit, HEADER_NAMES, RateLimitClient } from '../src/index.js';
import { startNode } from './helpers.js';

const slow = { attemptTimeoutMs: 10_000, timeoutMs: 20_000 };

// serverHeaders returns the rate-limit headers of the node's own answer to
// a check of hits, with their names as the server writes them.
async function serverHeaders(url, policy, key, hits) {
  const res = await fetch(`${url}/v1/check`, { method: 'POST', body: JSON.stringify({ policy, key, hits }) });
  await res.text();
  const out = {};
  for (const name of HEADER_NAMES) if (res.headers.get(name) !== null) out[name] = res.headers.get(name);
  return { status: res.status, headers: out };
}

function pick(headers) {
  const out = {};
  for (const name of HEADER_NAMES) if (headers.get(name) !== null) out[name] = headers.get(name);
  return out;
}

// sameHeaders compares two sets of rate-limit headers; the seconds until
// reset may differ by one between two answers a moment apart.
function sameHeaders(got, want) {
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
  for (const name of Object.keys(want)) {
    if (name === 'X-RateLimit-Reset' || name === 'RateLimit' || name === 'Retry-After') {
      const n = (s) => Number(String(s).match(/(\d+)$/)[1]);
      assert.ok(Math.abs(n(got[name]) - n(want[name])) <= 1, `${name}: ${got[name]} vs ${want[name]}`);
      assert.equal(String(got[name]).replace(/\d+$/, ''), String(want[name]).replace(/\d+$/, ''));
    } else {
      assert.equal(got[name], want[name], name);
    }
  }
}

test('middleware sets the server headers', async (t) => {
  const node = await startNode(t);
  const client = new RateLimitClient({ url: node.url, ...slow });

  await t.test('Express', async (t) => {
    const app = express();
    app.use(expressRateLimit({ client, policy: 'login', key: (req) => `ip:${req.get('x-test-ip')}` }));
    app.get('/', (req, res) => res.json({ ok: true, remaining: req.rateLimit.remaining }));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    t.after(() => server.close());
    const base = `http://127.0.0.1:${server.address().port}`;
    for (let i = 1; i <= 6; i++) {
      const res = await fetch(base, { headers: { 'x-test-ip': 'e1' } });
      const body = await res.json();
      // The node's own answer to a peek of the same key: the same
      // counter, so the same headers (a peek of a used-up key is denied,
      // so it adds Retry-After after the last allowed check).
      const want = await serverHeaders(node.url, 'login', 'ip:e1', 0);
      if (i === 5) delete want.headers['Retry-After'];
      sameHeaders(pick(res.headers), want.headers);
      assert.equal(res.status, i <= 5 ? 200 : 429, `request ${i}`);
      if (i <= 5) {
        assert.equal(body.remaining, 5 - i);
        assert.equal(res.headers.get('Retry-After'), null);
      } else {
        assert.equal(body.allowed, false);
        assert.ok(Number(res.headers.get('Retry-After')) >= 1);
        assert.equal(res.headers.get('RateLimit-Policy'), '"login";q=5;w=60');
      }
    }
  });

  await t.test('Edge (Web Request and Response)', async () => {
    const limit = edgeRateLimit({ client, policy: 'login', key: (req) => `ip:${req.headers.get('x-forwarded-for')}` });
    const handle = async (request) => {
      const { response, headers } = await limit(request);
      if (response) return response;
      return applyHeaders(new Response('ok'), headers);
    };
    for (let i = 1; i <= 6; i++) {
      const res = await handle(new Request('https://app.example/login', { headers: { 'x-forwarded-for': '203.0.113.9' } }));
      const want = await serverHeaders(node.url, 'login', 'ip:203.0.113.9', 0);
      if (i === 5) delete want.headers['Retry-After'];
      assert.equal(res.status, i <= 5 ? 200 : 429, `request ${i}`);
      sameHeaders(pick(res.headers), want.headers);
      if (i === 6) {
        const body = await res.json();
        assert.equal(body.allowed, false);
        assert.ok(body.retry_after_ms > 0);
      }
    }
  });

  await t.test('a fallback decision carries the same headers', async () => {
    const stuck = new RateLimitClient({ url: 'http://127.0.0.1:1', timeoutMs: 200, defaultFailureMode: 'closed' });
    const limit = edgeRateLimit({ client: stuck, policy: 'login', key: () => 'k' });
    const { response } = await limit(new Request('https://app.example/'));
    assert.equal(response.status, 429);
    assert.equal(response.headers.get('Retry-After'), '1');
    assert.equal(response.headers.get('X-RateLimit-Remaining'), '0');
  });
});
