// Overhead of the client: checks per second through RateLimitClient.check
// against a plain fetch loop on the same endpoint of the same node, in the
// same run, alternated. Usage (from clients/node):
//
//   RATELIMITD_BIN=/path/to/ratelimitd node bench/overhead.js [checks] [concurrency]
//
// Each round is bounded by its count; the whole run by 5 minutes.

import { spawn } from 'node:child_process';

import { RateLimitClient } from '../src/index.js';
import { policyFile, ratelimitd } from '../test/helpers.js';

const total = Number(process.argv[2] ?? 20000);
const concurrency = Number(process.argv[3] ?? 16);
const rounds = 3;

const proc = spawn(ratelimitd(), ['serve', '--standalone', '--http-addr', '127.0.0.1:0', '--policies', policyFile()], { stdio: ['ignore', 'ignore', 'pipe'] });
const stop = setTimeout(() => {
  console.error('overhead: over 5 minutes; stopped');
  proc.kill('SIGKILL');
  process.exit(1);
}, 300_000);
let log = '';
const url = await new Promise((resolve, reject) => {
  proc.stderr.on('data', (b) => {
    log += b;
    const m = log.match(/\bmsg=listening\b.*\baddr=(\S+)/);
    if (m) resolve(`http://${m[1]}`);
  });
  proc.on('exit', (c) => reject(new Error(`ratelimitd exited ${c}: ${log}`)));
});

async function loop(one) {
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const i = next++;
        await one(i);
      }
    }),
  );
  return total / ((performance.now() - start) / 1000);
}

const plain = async (i) => {
  const res = await fetch(`${url}/v1/check`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ policy: 'bench', key: `k${i % 1000}`, hits: 1 }),
  });
  const body = await res.json();
  if (res.status !== 200 || !body.allowed) throw new Error(`plain fetch: ${res.status}`);
};
const client = new RateLimitClient({ url, timeoutMs: 10_000, attemptTimeoutMs: 10_000 });
const viaClient = async (i) => {
  const r = await client.check('bench', `k${i % 1000}`);
  if (!r.allowed || r.fallback) throw new Error('client: not allowed');
};

await loop(plain); // warm-up: connections and JIT
await loop(viaClient);
const results = { fetch: [], client: [] };
for (let r = 0; r < rounds; r++) {
  results.fetch.push(await loop(plain));
  results.client.push(await loop(viaClient));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const f = median(results.fetch);
const c = median(results.client);
console.log(`checks: ${total} per round, concurrency ${concurrency}, ${rounds} rounds alternated (median)`);
console.log(`plain fetch:        ${f.toFixed(0)} checks/s  (rounds: ${results.fetch.map((x) => x.toFixed(0)).join(', ')})`);
console.log(`RateLimitClient:    ${c.toFixed(0)} checks/s  (rounds: ${results.client.map((x) => x.toFixed(0)).join(', ')})`);
console.log(`client / fetch:     ${(c / f).toFixed(3)}`);
client.close();
clearTimeout(stop);
proc.kill('SIGTERM');
