import assert from 'node:assert/strict';
import { test } from 'node:test';

import { askOwner, metric, startCluster, waitRing } from './helpers.js';
import { RateLimitClient } from '../src/index.js';
import { ownerOf, parseRing } from '../src/ring.js';

// Generous times for a busy machine.
const slow = { attemptTimeoutMs: 5000, timeoutMs: 20_000, healthIntervalMs: 0 };

// forwarded is the number of checks the nodes forwarded to an owner.
async function forwarded(nodes) {
  let n = 0;
  for (const node of nodes) if (node.proc.exitCode === null && node.proc.signalCode === null) n += await metric(node.url, 'ratelimit_peer_checks_sent_total');
  return n;
}

async function publishedVersion(url) {
  return (await (await fetch(`${url}/v1/ring`)).json()).version;
}

// waitVersion sends peeks through client until it routes by the version
// node publishes (an answer with another version makes it read the ring).
async function waitVersion(client, url, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const want = await publishedVersion(url);
    if (client.ringVersion === want) return want;
    if (Date.now() > deadline) throw new Error(`client routes by ring ${client.ringVersion}, ${url} publishes ${want}`);
    await client.peek('bench', 'probe');
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// One cluster for the whole file, in steps: routing and exactness on three
// nodes, then a fourth joins while checks run (a client that reads the new
// ring, one left on the stale ring), then a node is killed.
test('owner-aware routing against a real cluster', async (t) => {
  const nodes = await startCluster(t, 3);
  const urls = nodes.map((n) => n.url);
  const client = new RateLimitClient({ urls, ownerAware: true, ringRefreshMs: 20, ...slow });
  t.after(() => client.close());
  const v3 = await client.refreshRing();
  assert.ok(v3, 'no ring read');
  await waitVersion(client, urls[0]); // a member suspected for a moment changes the ring

  await t.test('the client computes the owner the nodes name', async () => {
    const ring = parseRing(await (await fetch(`${urls[1]}/v1/ring`)).json());
    assert.deepEqual(ring.members.map((m) => m.name), ['n1', 'n2', 'n3']);
    for (let i = 0; i < 60; i++) {
      const policy = ['bench', 'login', 'twenty'][i % 3];
      const key = `owner:${i}:ü`;
      assert.equal(ownerOf(ring, policy, key).name, await askOwner(urls[i % 3], policy, key), `${policy}/${key}`);
    }
  });

  await t.test('checks land on their owners', async () => {
    let before = await forwarded(nodes);
    for (let i = 0; i < 300; i++) {
      const r = await client.check('bench', `route:${i}`);
      assert.equal(r.allowed, true);
      assert.equal(r.fallback, undefined);
    }
    const aware = (await forwarded(nodes)) - before;
    const plain = new RateLimitClient({ urls: [urls[0]], ...slow });
    before = await forwarded(nodes);
    for (let i = 0; i < 300; i++) await plain.check('bench', `plain:${i}`);
    const viaOne = (await forwarded(nodes)) - before;
    t.diagnostic(`forwarded: ${aware} of 300 checks with ownerAware, ${viaOne} of 300 through one node`);
    // None in steady state; a member that a loaded machine's failure
    // detector suspects for a moment changes the ring, and a few checks.
    assert.ok(viaOne >= 150, `through one node only ${viaOne} of 300 forwarded`);
    assert.ok(aware * 20 <= viaOne, `ownerAware: ${aware} of 300 forwarded, through one node ${viaOne}`);
  });

  await t.test('a batch is split by owner, its answers kept in order', async () => {
    const checks = Array.from({ length: 90 }, (_, i) => ({ policy: 'bench', key: `batch:${i}`, hits: (i % 7) + 1 }));
    checks.splice(45, 0, { policy: 'nope', key: 'batch:x' });
    const before = await forwarded(nodes);
    const rs = await client.checkBatch(checks);
    const fw = (await forwarded(nodes)) - before;
    assert.equal(rs.length, checks.length);
    rs.forEach((r, i) => {
      if (i === 45) {
        assert.equal(r.status, 400, 'the unknown policy');
        return;
      }
      assert.equal(r.fallback, undefined);
      assert.equal(r.remaining, r.limit - checks[i].hits, `check ${i} answered with another check's result`);
    });
    assert.ok(fw <= 5, `${fw} of 90 batched checks forwarded`);
  });

  await t.test('5000 checks of a limit of 1000 admit 1000', async () => {
    let allowed = 0;
    let fallback = 0;
    let next = 0;
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        while (next < 5000) {
          next++;
          const r = await client.check('thousand', 'one-key');
          if (r.fallback) fallback++;
          else if (r.allowed) allowed++;
        }
      }),
    );
    assert.equal(fallback, 0);
    assert.equal(allowed, 1000);
  });

  // Keys of twenty (limit 20) and of bench, checked by one loop each until
  // the fourth node has joined and a while after.
  const stale = new RateLimitClient({ urls, ownerAware: true, ringRefreshMs: 3_600_000, ...slow });
  t.after(() => stale.close());
  assert.equal(await stale.refreshRing(), client.ringVersion);
  const keys = 30;

  await t.test('a node joins while checks run: none lost, none counted twice', async () => {
    const ownersBefore = await Promise.all(Array.from({ length: keys }, (_, k) => askOwner(urls[0], 'twenty', `k${k}`)));
    const allowed = new Array(keys).fill(0);
    const sent = new Array(keys).fill(0);
    let failed = 0;
    let joinedAt = 0;
    const loops = Array.from({ length: keys }, async (_, k) => {
      for (let i = 0; i < 400 && !(joinedAt && Date.now() - joinedAt > 1000 && i >= 45); i++) {
        try {
          const [a, b] = await Promise.all([client.check('twenty', `k${k}`), client.check('bench', `k${k}`)]);
          if (a.fallback || b.fallback) failed++;
          if (a.allowed) allowed[k]++;
          sent[k]++;
        } catch (err) {
          failed++;
          t.diagnostic(String(err));
        }
        await sleep(5);
      }
    });
    await nodes.addNode(t);
    await waitRing(nodes, 4);
    joinedAt = Date.now();
    await Promise.all(loops);
    assert.equal(failed, 0, 'checks not answered by the cluster');
    const ownersAfter = await Promise.all(Array.from({ length: keys }, (_, k) => askOwner(urls[0], 'twenty', `k${k}`)));
    let moved = 0;
    let exact = 0;
    for (let k = 0; k < keys; k++) {
      if (ownersBefore[k] !== ownersAfter[k]) moved++;
      assert.ok(sent[k] >= 45, `key k${k}: only ${sent[k]} checks`);
      // At least the limit (nothing lost), at most the cluster's bound for
      // a key whose owner changed (2 × limit).
      assert.ok(allowed[k] >= 20 && allowed[k] <= 40, `key k${k} (${ownersBefore[k]} → ${ownersAfter[k]}): ${allowed[k]} allowed of ${sent[k]}`);
      // bench never denies: its counter holds the hits it counted, no more
      // than were sent (a check sent twice would count twice).
      const peek = await client.peek('bench', `k${k}`);
      const counted = peek.limit - peek.remaining;
      assert.ok(counted <= sent[k], `bench k${k}: ${counted} counted of ${sent[k]} sent`);
      if (counted === sent[k]) exact++;
    }
    t.diagnostic(`${moved} of ${keys} keys moved to n4; ${exact} bench counters exactly the checks sent`);
    // The answers told the client its ring was stale.
    const v4 = await waitVersion(client, urls[0]);
    assert.notEqual(v4, v3);
    assert.deepEqual(parseRing(await (await fetch(`${urls[0]}/v1/ring`)).json()).members.map((m) => m.name), ['n1', 'n2', 'n3', 'n4']);
  });

  await t.test('a client on a stale ring still gets exact decisions', async () => {
    assert.equal(stale.ringVersion, v3, 'the stale client read the ring again');
    // Keys of n4: the stale ring gives them to another node.
    const wrong = [];
    for (let i = 0; wrong.length < 5 && i < 2000; i++) {
      const key = `stale:${i}`;
      if ((await askOwner(urls[1], 'login', key)) === 'n4') wrong.push(key);
    }
    assert.equal(wrong.length, 5, 'no key moved to n4');
    const before = await forwarded(nodes);
    for (const key of wrong) {
      const got = [];
      for (let i = 0; i < 8; i++) got.push((await stale.check('login', key)).allowed);
      assert.deepEqual(got, [true, true, true, true, true, false, false, false], key);
    }
    // The nodes the stale ring named forwarded them to n4: at least the
    // allowed ones (a node answers a denial it saw again from its cache).
    const fw = (await forwarded(nodes)) - before;
    assert.ok(fw >= 5 * wrong.length, `${fw} of the stale checks forwarded`);
    assert.equal(stale.ringVersion, v3);
    // Read again, the ring sends them to n4 directly.
    await stale.refreshRing();
    assert.equal(stale.ringVersion, client.ringVersion);
    const after = await forwarded(nodes);
    for (const key of wrong) assert.equal((await stale.check('login', key)).allowed, false);
    assert.ok((await forwarded(nodes)) - after <= 1, 'checks forwarded after the refresh');
  });

  await t.test('a node killed: its keys go through another node', async () => {
    const victim = nodes[1];
    // The ring the nodes (and so the client) route by when the node dies.
    const before = parseRing(await (await fetch(`${urls[0]}/v1/ring`)).json());
    victim.kill('SIGKILL');
    await new Promise((r) => (victim.proc.exitCode !== null || victim.proc.signalCode !== null ? r() : victim.proc.once('exit', r)));
    let owned = 0;
    for (let i = 0; i < 300; i++) {
      const key = `killed:${i}`;
      const r = await client.check('bench', key);
      assert.equal(r.fallback, undefined, `check ${i} fell back in the client: ${r.error}`);
      assert.equal(r.allowed, true);
      if (ownerOf(before, 'bench', key).name === 'n2') owned++;
    }
    // About a quarter of the keys were the dead node's: their checks were
    // refused there and went through another node.
    assert.ok(owned >= 30, `only ${owned} of 300 keys were n2's`);
    t.diagnostic(`${owned} of 300 checks were of keys the dead node owned`);
    await waitRing([nodes[0], nodes[2], nodes[3]], 3);
    await waitVersion(client, urls[0]);
    const ring = parseRing(await (await fetch(`${urls[0]}/v1/ring`)).json());
    assert.deepEqual(ring.members.map((m) => m.name), ['n1', 'n3', 'n4']);
  });
});
