import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  BadRequestError,
  ForbiddenError,
  RateLimitClient,
  TimeoutError,
  UnavailableError,
} from '../src/index.js';
import { ADMIN_TOKEN, CLIENT_TOKEN, hangingServer, startNode } from './helpers.js';

// Generous times for a busy machine, where a cold fetch can take a second;
// the tests of timeouts set their own.
const slow = { attemptTimeoutMs: 10_000, timeoutMs: 20_000 };

test('client against one node', async (t) => {
  const node = await startNode(t);
  const client = new RateLimitClient({ url: node.url, token: CLIENT_TOKEN, ...slow });
  t.after(() => client.close());
  const admin = new RateLimitClient({ url: node.url, token: ADMIN_TOKEN, ...slow });

  await t.test('check counts down, then denies', async () => {
    for (let i = 1; i <= 5; i++) {
      const r = await client.check('login', 'ip:1');
      assert.equal(r.allowed, true);
      assert.equal(r.limit, 5);
      assert.equal(r.remaining, 5 - i);
      assert.equal(r.retryAfterMs, 0);
      assert.ok(r.resetAfterMs > 0);
      assert.equal(r.headers['X-RateLimit-Remaining'], String(5 - i));
    }
    const r = await client.check('login', 'ip:1');
    assert.equal(r.allowed, false);
    assert.equal(r.remaining, 0);
    assert.ok(r.retryAfterMs > 0);
    assert.ok(Number(r.headers['Retry-After']) >= 1);
  });

  await t.test('peek consumes nothing', async () => {
    await client.check('login', 'ip:2', 2);
    for (let i = 0; i < 3; i++) assert.equal((await client.peek('login', 'ip:2')).remaining, 3);
  });

  await t.test('checkBatch answers in order, a refused check with its error', async () => {
    const rs = await client.checkBatch([
      { policy: 'login', key: 'ip:3', hits: 2 },
      { policy: 'nope', key: 'ip:3' },
      { policy: 'login', key: 'ip:3' },
    ]);
    assert.equal(rs.length, 3);
    assert.equal(rs[0].remaining, 3);
    assert.equal(rs[1].status, 400);
    assert.equal(rs[1].field, 'policy');
    assert.equal(rs[2].remaining, 2);
  });

  await t.test('refund gives hits back, reset makes the key fresh', async () => {
    await client.check('login', 'ip:4', 5);
    assert.equal((await client.check('login', 'ip:4')).allowed, false);
    const r = await client.refund('login', 'ip:4', 2);
    assert.equal(r.remaining, 2);
    assert.equal((await client.check('login', 'ip:4', 2)).allowed, true);
    assert.equal((await client.check('login', 'ip:4')).allowed, false);
    const fresh = await client.reset('login', 'ip:4');
    assert.equal(fresh.remaining, 5);
    assert.equal((await client.check('login', 'ip:4', 5)).allowed, true);
    const batch = await client.refundBatch([{ policy: 'login', key: 'ip:4', hits: 1 }]);
    assert.equal(batch[0].remaining, 1);
    const resets = await client.resetBatch([{ policy: 'login', key: 'ip:4' }, { policy: 'nope', key: 'x' }]);
    assert.equal(resets[0].remaining, 5);
    assert.equal(resets[1].status, 400);
  });

  await t.test('errors are typed', async () => {
    await assert.rejects(client.check('nope', 'k'), (e) => e instanceof BadRequestError && e.status === 400 && e.field === 'policy');
    const anon = new RateLimitClient({ url: node.url, ...slow });
    await client.check('login', 'ip:5', 5);
    await assert.rejects(anon.reset('login', 'ip:5'), (e) => e instanceof ForbiddenError && e.status === 403);
    await assert.rejects(anon.refund('login', 'ip:5'), ForbiddenError);
    assert.equal((await client.peek('login', 'ip:5')).remaining, 0, 'a refused reset changed nothing');
    await assert.rejects(client.check('login', ''), TypeError);
  });

  await t.test('policies and health', async () => {
    // The policy table needs the admin token once a node has one.
    await assert.rejects(client.policies(), (e) => e.status === 401);
    const ps = await admin.policies();
    assert.ok(ps.some((p) => p.name === 'login_closed' && p.failure_mode === 'closed'));
    assert.deepEqual(await client.health(), [{ url: node.url, healthy: true }]);
  });

  await t.test('a stuck node times out; the next node answers', async () => {
    const stuck = await hangingServer(t);
    const c = new RateLimitClient({ urls: [stuck, node.url], attemptTimeoutMs: 1000, timeoutMs: 10_000, healthIntervalMs: 0 });
    const start = Date.now();
    const r = await c.check('login', 'ip:6');
    assert.equal(r.allowed, true);
    assert.equal(r.fallback, undefined);
    assert.ok(Date.now() - start < 10_000);
    // The stuck node is now marked down: the next calls go to the other
    // first, and none waits for the stuck one.
    for (let i = 0; i < 3; i++) {
      const r2 = await c.check('login', 'ip:7', 0, { attemptTimeoutMs: 2000 });
      assert.equal(r2.fallback, undefined);
    }
    assert.deepEqual((await c.health({ timeoutMs: 2000 })).map((h) => h.healthy), [false, true]);
  });
});

test('failure modes when no node answers', async (t) => {
  const stuck = await hangingServer(t);

  await t.test('a timeout per call, then the configured mode', async () => {
    const open = new RateLimitClient({ url: stuck, timeoutMs: 150, failureModes: { login: 'open' } });
    const start = Date.now();
    const r = await open.check('login', 'k', 1);
    assert.ok(Date.now() - start >= 140, 'the call waited for its timeout');
    assert.equal(r.allowed, true);
    assert.equal(r.fallback, 'open');
    assert.ok(r.error instanceof UnavailableError);
    assert.ok(r.error.errors[0] instanceof TimeoutError);

    const closed = new RateLimitClient({ url: stuck, timeoutMs: 150, defaultFailureMode: 'closed' });
    const d = await closed.check('login', 'k');
    assert.equal(d.allowed, false);
    assert.equal(d.fallback, 'closed');
    assert.ok(d.retryAfterMs > 0);
  });

  await t.test('resets and refunds are never made up', async () => {
    const c = new RateLimitClient({ url: stuck, timeoutMs: 150, token: CLIENT_TOKEN });
    await assert.rejects(c.reset('login', 'k'), UnavailableError);
    await assert.rejects(c.refund('login', 'k', 1), UnavailableError);
  });

  await t.test("the policy's own failure mode, learnt from the node", async () => {
    const node = await startNode(t);
    const c = new RateLimitClient({ url: node.url, token: ADMIN_TOKEN, timeoutMs: 300, healthIntervalMs: 0 });
    await c.policies(slow);
    node.kill('SIGKILL');
    await new Promise((r) => node.proc.once('exit', r));
    const closed = await c.check('login_closed', 'k');
    assert.equal(closed.allowed, false);
    assert.equal(closed.fallback, 'closed');
    assert.equal(closed.limit, 5);
    const open = await c.check('login_open', 'k');
    assert.equal(open.allowed, true);
    assert.equal(open.fallback, 'open');
    assert.equal(open.remaining, 4);
  });
});
