import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CLIENT_TOKEN, startCluster } from './helpers.js';
import { RateLimitClient } from '../src/index.js';

// TestFailover: a client of three nodes keeps answering every check from
// the cluster (no fallback of its own) when one node is killed, and marks
// that node down.
test('failover when one of three nodes is killed', async (t) => {
  const nodes = await startCluster(t, 3);
  const client = new RateLimitClient({ urls: nodes.map((n) => n.url), token: CLIENT_TOKEN, attemptTimeoutMs: 5000, timeoutMs: 20_000, healthIntervalMs: 0 });
  // Before the kill: the limit holds across the nodes (each call goes to
  // the next node), and reset and refund reach the key's owner.
  let allowed = 0;
  for (let i = 0; i < 8; i++) if ((await client.check('login', 'user:1')).allowed) allowed++;
  assert.equal(allowed, 5);
  assert.equal((await client.refund('login', 'user:1', 2)).remaining, 2);
  assert.equal((await client.reset('login', 'user:1')).remaining, 5);

  nodes[1].kill('SIGKILL');
  await new Promise((r) => nodes[1].proc.once('exit', r));
  const answered = [];
  for (let i = 0; i < 30; i++) {
    const r = await client.check('default', `user:${i % 5}`);
    answered.push(r.fallback === undefined);
  }
  assert.ok(answered.every(Boolean), 'a check fell back in the client although two nodes answer');
  const health = await client.health({ timeoutMs: 2000 });
  assert.deepEqual(health.map((h) => h.healthy), [true, false, true]);
});
