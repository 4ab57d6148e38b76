// Test helpers: the ratelimitd binary built from this repository, nodes
// started on free ports (the `listening` log line gives the address), a
// private redis-server, and everything stopped by pid when the test ends.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

let binary;

/**
 * ratelimitd returns the path of a ratelimitd binary: RATELIMITD_BIN (as
 * scripts/test.sh builds it once), else one built from this repository.
 */
export function ratelimitd() {
  if (process.env.RATELIMITD_BIN) return process.env.RATELIMITD_BIN;
  if (!binary) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ratelimit-node-bin-'));
    binary = path.join(dir, 'ratelimitd');
    execFileSync('go', ['build', '-o', binary, './cmd/ratelimitd'], { cwd: repo, stdio: ['ignore', 'ignore', 'inherit'] });
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return binary;
}

export const CLIENT_TOKEN = 'test-client-token';
export const ADMIN_TOKEN = 'test-admin-token';

/** The policies of the test nodes, beside the built-in ones. */
export function policyFile() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ratelimit-node-'));
  const file = path.join(dir, 'policies.yaml');
  writeFileSync(
    file,
    `policies:
  - {name: login, algorithm: sliding_window, limit: 5, window_ms: 60000}
  - {name: login_open, algorithm: sliding_window, limit: 5, window_ms: 60000, failure_mode: open}
  - {name: login_closed, algorithm: sliding_window, limit: 5, window_ms: 60000, failure_mode: closed}
  - {name: bench, algorithm: sliding_window, limit: 1000000000, window_ms: 3600000}
  - {name: thousand, algorithm: sliding_window, limit: 1000, window_ms: 3600000}
  - {name: twenty, algorithm: sliding_window, limit: 20, window_ms: 3600000}
`,
  );
  return file;
}

const listening = /\bmsg=listening\b.*\baddr=(\S+)/;
const clusterAddrs = /\bgossip=(\S+) peer=(\S+) raft=(\S+)/;

/**
 * startNode runs `ratelimitd serve` with args (standalone unless args say
 * otherwise), waits for its listening line, and stops it when t ends.
 */
export async function startNode(t, args = [], env = {}) {
  const all = ['serve', '--http-addr', '127.0.0.1:0', '--client-token', CLIENT_TOKEN, '--admin-token', ADMIN_TOKEN, '--policies', policyFile(), ...args];
  if (!args.includes('--gossip-addr')) all.push('--standalone');
  const proc = spawn(ratelimitd(), all, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let log = '';
  const node = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line within 60 s:\n${log}`)), 60_000);
    proc.stderr.on('data', (b) => {
      log += b;
      const m = log.match(listening);
      if (m) {
        clearTimeout(timer);
        const c = log.match(clusterAddrs);
        resolve({ url: `http://${m[1].replace(/"/g, '')}`, gossip: c && c[1] });
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`ratelimitd exited with ${code}:\n${log}`));
    });
  });
  node.proc = proc;
  node.log = () => log;
  node.kill = (signal = 'SIGKILL') => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
  };
  t.after(() => node.kill('SIGKILL'));
  return node;
}

const clusterArgs = ['--gossip-addr', '127.0.0.1:0', '--peer-addr', '127.0.0.1:0', '--raft-addr', '127.0.0.1:0', '--gossip-profile', 'local'];

/**
 * startCluster starts n nodes joined in one cluster (named n1, n2, ...),
 * and waits until every node's ring holds n. The array has an addNode(t)
 * method that starts one more node in the cluster.
 */
export async function startCluster(t, n) {
  // The key that lets the nodes into one cluster, made for this test.
  const env = { RATELIMIT_CLUSTER_KEY: execFileSync(ratelimitd(), ['keygen']).toString().trim() };
  const first = await startNode(t, [...clusterArgs, '--node-name', 'n1'], env);
  const nodes = [first];
  for (let i = 2; i <= n; i++) nodes.push(await startNode(t, [...clusterArgs, '--node-name', `n${i}`, '--join', first.gossip], env));
  await waitRing(nodes, n);
  nodes.addNode = async (tt) => {
    const node = await startNode(tt, [...clusterArgs, '--node-name', `n${nodes.length + 1}`, '--join', first.gossip], env);
    nodes.push(node);
    return node;
  };
  return nodes;
}

/** waitRing waits until every one of nodes has n members in its ring. */
export async function waitRing(nodes, n, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (const node of nodes) {
    for (;;) {
      try {
        const res = await fetch(`${node.url}/v1/cluster`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
        const s = await res.json();
        if (s.ring_members === n) break;
      } catch {
        // not yet
      }
      if (Date.now() > deadline) throw new Error(`cluster of ${n} did not converge`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** metric returns the sum of a metric's samples on a node's /metrics (0 when absent). */
export async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name + ' ') || line.startsWith(name + '{')) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** askOwner asks a node who owns (policy, key) (GET /v1/owner). */
export async function askOwner(url, policy, key) {
  const res = await fetch(`${url}/v1/owner?policy=${encodeURIComponent(policy)}&key=${encodeURIComponent(key)}`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
  if (res.status !== 200) throw new Error(`GET /v1/owner: ${res.status} ${await res.text()}`);
  return (await res.json()).owner;
}

/** freePort returns a free loopback port. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** startRedis runs a private redis-server on a free port, stopped by pid when t ends. */
export async function startRedis(t) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ratelimit-node-redis-'));
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  t.after(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.write('PING\r\n');
      });
      s.on('data', (b) => {
        s.destroy();
        resolve(String(b).startsWith('+PONG'));
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return { port, url: `redis://127.0.0.1:${port}` };
    if (Date.now() > deadline) throw new Error('redis-server did not answer');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * hangingServer accepts connections and never answers: a node that is up
 * but stuck. It is closed when t ends.
 */
export async function hangingServer(t) {
  const sockets = new Set();
  const s = net.createServer((c) => {
    sockets.add(c);
    c.on('error', () => {});
  });
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const c of sockets) c.destroy();
    s.close();
  });
  return `http://127.0.0.1:${s.address().port}`;
}
