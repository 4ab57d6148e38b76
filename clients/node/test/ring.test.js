import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { keyBytes, ownerOf, parseRing, partitionOf, xxhash64 } from '../src/ring.js';

// fixtures/ring.json is written by the Go test TestNodeClientFixture
// (cluster/ring), from the hash and the ring the nodes use: the owner this
// client computes for a key is the one the nodes route it to.
const fixture = JSON.parse(readFileSync(new URL('./fixtures/ring.json', import.meta.url), 'utf8'));

test('xxhash64 matches the reference vectors', () => {
  const e = new TextEncoder();
  assert.equal(xxhash64(e.encode('')).toString(16), 'ef46db3751d8e999');
  assert.equal(xxhash64(e.encode('a')).toString(16), 'd24ec4f1a98c6e5b');
  assert.equal(xxhash64(e.encode('abc')).toString(16), '44bc2cf5ad770999');
});

test('the hash, partition and owner of every fixture key are the nodes\'', () => {
  assert.ok(fixture.cases.length > 100);
  const ring = parseRing({
    version: 'v',
    members: fixture.members.map((name, i) => ({ name, http_addr: `127.0.0.1:${8081 + i}` })),
    owners: fixture.owners,
  });
  for (const c of fixture.cases) {
    const what = `${c.policy.slice(0, 20)}/${c.key.slice(0, 20)}`;
    assert.equal(xxhash64(keyBytes(c.policy, c.key)).toString(16), c.hash, `hash of ${what}`);
    assert.equal(partitionOf(c.policy, c.key, fixture.owners.length), c.partition, `partition of ${what}`);
    assert.equal(ownerOf(ring, c.policy, c.key).name, c.owner, `owner of ${what}`);
  }
});

test('partitionOf agrees with the BigInt modulo for long and multi-byte keys', () => {
  for (const [policy, key] of [['auth', 'k'.repeat(1000)], ['p'.repeat(200), '用户🙂'.repeat(50)], ['a', 'b']]) {
    for (const m of [4099, 271, 1 << 20, 7]) {
      assert.equal(partitionOf(policy, key, m), Number(xxhash64(keyBytes(policy, key)) % BigInt(m)), `${policy.length}/${key.length} mod ${m}`);
    }
  }
});

test('the key encoding is unambiguous', () => {
  assert.deepEqual([...keyBytes('a_b', 'c')], [3, 97, 95, 98, 99]);
  assert.deepEqual([...keyBytes('a', 'b_c')], [1, 97, 98, 95, 99]);
  assert.deepEqual([...keyBytes('p'.repeat(128), 'k').subarray(0, 2)], [0x80, 0x01]);
});

test('parseRing refuses a malformed view and skips unusable addresses', () => {
  const good = { version: 'v1', members: [{ name: 'n1', http_addr: '10.0.0.1:8080' }, { name: 'n2', http_addr: '0.0.0.0:8080' }, { name: 'n3' }, { name: 'n4', http_addr: '[::1]:8080' }], owners: [0, 1, 2, 3] };
  const r = parseRing(good, 'https:');
  assert.deepEqual(r.members.map((m) => m.url), ['https://10.0.0.1:8080', null, null, 'https://[::1]:8080']);
  for (const bad of [
    null,
    { ...good, version: '' },
    { ...good, members: [] },
    { ...good, owners: [] },
    { ...good, owners: [0, 4] },
    { ...good, owners: [0, -1] },
    { ...good, owners: [0, 1.5] },
    { ...good, members: [{ http_addr: 'x:1' }] },
  ]) {
    assert.throws(() => parseRing(bad), TypeError);
  }
  assert.equal(parseRing({ ...good, members: [{ name: 'n1', http_addr: 'evil.example/path:80' }], owners: [0] }).members[0].url, null);
});

test('a ring longer than the client reads is refused, and checks go to any node', async (t) => {
  const http = await import('node:http');
  const { RateLimitClient } = await import('../src/index.js');
  // A node whose ring is 5 MiB of members (more than the 4 MiB read) and
  // which answers checks itself.
  let checks = 0;
  const srv = http.createServer((req, res) => {
    if (req.url === '/v1/ring') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.write('{"version":"v","members":[');
      for (let i = 0; i < 5 * 1024; i++) res.write(`${i ? ',' : ''}{"name":"${'n'.repeat(1000)}"}`);
      res.end('],"owners":[0]}');
      return;
    }
    if (req.url === '/v1/check') checks++;
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end('{"allowed":true,"policy":"p","limit":1,"remaining":0,"reset_after_ms":1,"retry_after_ms":0}');
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => srv.close());
  const client = new RateLimitClient({ url: `http://127.0.0.1:${srv.address().port}`, ownerAware: true, healthIntervalMs: 0, attemptTimeoutMs: 5000 });
  assert.equal(await client.refreshRing(), null);
  assert.equal((await client.check('p', 'k')).allowed, true);
  assert.equal(checks, 1);
});
