// Server CPU per decision of a three-node cluster, checks sent by the
// client to any node (round robin: two in three are forwarded to their
// key's owner) against the same client with ownerAware (each check sent
// to its owner), in the same run, alternated. CPU is read from
// /proc/PID/stat of the three ratelimitd processes before and after each
// round, and includes their idle background work. Usage (from clients/node):
//
//   RATELIMITD_BIN=/path/to/ratelimitd node bench/owneraware.js [checks] [concurrency]
//
// Each round is bounded by its count; the whole run by 5 minutes.

import { readFileSync } from 'node:fs';

import { RateLimitClient } from '../src/index.js';
import { ownerOf } from '../src/ring.js';
import { startCluster } from '../test/helpers.js';

const total = Number(process.argv[2] ?? 20000);
const concurrency = Number(process.argv[3] ?? 16);
const rounds = 3;
const TICK_NS = 1e9 / 100; // CLK_TCK, 100 on Linux

const cleanups = [];
const stop = setTimeout(() => {
  console.error('owneraware: over 5 minutes; stopped');
  for (const f of cleanups) f();
  process.exit(1);
}, 300_000);
const nodes = await startCluster({ after: (f) => cleanups.push(f) }, 3);
const urls = nodes.map((n) => n.url);

// cpuNs is the CPU time (user + system) the nodes used so far.
function cpuNs() {
  let ticks = 0;
  for (const n of nodes) {
    const stat = readFileSync(`/proc/${n.proc.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]); // utime, stime: fields 14 and 15
  }
  return ticks * TICK_NS;
}

async function loop(client, prefix) {
  let next = 0;
  const cpu = cpuNs();
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const i = next++;
        const r = await client.check('bench', `${prefix}${i % 5000}`);
        if (!r.allowed || r.fallback) throw new Error('not allowed');
      }
    }),
  );
  const secs = (performance.now() - start) / 1000;
  return { perSec: total / secs, cpuUs: (cpuNs() - cpu) / total / 1000 };
}

const opts = { urls, timeoutMs: 10_000, attemptTimeoutMs: 10_000, healthIntervalMs: 0 };
const anyNode = new RateLimitClient(opts);
const aware = new RateLimitClient({ ...opts, ownerAware: true });
await aware.refreshRing();
await loop(anyNode, 'w'); // warm-up: connections and JIT
await loop(aware, 'w');
const results = { any: [], aware: [] };
for (let r = 0; r < rounds; r++) {
  results.any.push(await loop(anyNode, `a${r}:`));
  results.aware.push(await loop(aware, `o${r}:`));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const show = (rs) => `${median(rs.map((x) => x.cpuUs)).toFixed(1)} µs CPU/decision, ${median(rs.map((x) => x.perSec)).toFixed(0)} checks/s  (rounds: ${rs.map((x) => x.cpuUs.toFixed(1)).join(', ')} µs)`;
console.log(`checks: ${total} per round, concurrency ${concurrency}, ${rounds} rounds alternated (median); server CPU summed over 3 nodes`);
console.log(`any node:     ${show(results.any)}`);
console.log(`ownerAware:   ${show(results.aware)}`);
console.log(`aware / any:  ${(median(results.aware.map((x) => x.cpuUs)) / median(results.any.map((x) => x.cpuUs))).toFixed(3)} CPU per decision`);

// The client's own cost of finding an owner.
const ring = { version: 'v', members: [{ name: 'a', url: 'x' }, { name: 'b', url: 'y' }, { name: 'c', url: 'z' }], owners: Int32Array.from({ length: 4099 }, (_, i) => i % 3) };
const n = 100_000;
let t = performance.now();
for (let i = 0; i < n; i++) ownerOf(ring, 'bench', `ip:203.0.113.${i % 256}`);
console.log(`ownerOf:      ${(((performance.now() - t) * 1000) / n).toFixed(2)} µs per key (client CPU)`);
anyNode.close();
aware.close();
clearTimeout(stop);
for (const f of cleanups) f();
