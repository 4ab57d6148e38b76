// The ring a ratelimitd cluster publishes (GET /v1/ring), and the owner of
// a key in it, computed as the nodes compute it (cluster/ringview.go): a
// key's partition is xxhash64 of its encoding (bucket.Key.AppendBinary:
// the policy's byte length as a uvarint, the policy, the key, in UTF-8)
// modulo the number of partitions, and owners[partition] is the index of
// its owner among the members.
//
// xxhash64 is written out here (about 60 lines of BigInt arithmetic, the
// reference algorithm with seed 0) rather than taken from a package: the
// client has no runtime dependency and runs on the Edge runtime, where the
// WebAssembly builds cannot be compiled and the native ones do not load.
// test/ring.test.js checks it against the Go implementation the nodes use.

const M64 = (1n << 64n) - 1n;
const P1 = 0x9e3779b185ebca87n;
const P2 = 0xc2b2ae3d27d4eb4fn;
const P3 = 0x165667b19e3779f9n;
const P4 = 0x85ebca77c2b2ae63n;
const P5 = 0x27d4eb2f165667c5n;

const rotl = (x, r) => ((x << r) | (x >> (64n - r))) & M64;
const mul = (a, b) => (a * b) & M64;

function round(acc, input) {
  acc = (acc + mul(input, P2)) & M64;
  return mul(rotl(acc, 31n), P1);
}

function merge(acc, v) {
  acc ^= round(0n, v);
  return (mul(acc, P1) + P4) & M64;
}

function u64(dv, off) {
  return dv.getBigUint64(off, true);
}

/** xxhash64 returns the XXH64 hash (seed 0) of bytes, a Uint8Array, as a BigInt. */
export function xxhash64(bytes) {
  const n = bytes.length;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 0;
  let h;
  if (n >= 32) {
    let v1 = (P1 + P2) & M64;
    let v2 = P2;
    let v3 = 0n;
    let v4 = (0n - P1) & M64;
    for (; p + 32 <= n; p += 32) {
      v1 = round(v1, u64(dv, p));
      v2 = round(v2, u64(dv, p + 8));
      v3 = round(v3, u64(dv, p + 16));
      v4 = round(v4, u64(dv, p + 24));
    }
    h = (rotl(v1, 1n) + rotl(v2, 7n) + rotl(v3, 12n) + rotl(v4, 18n)) & M64;
    h = merge(h, v1);
    h = merge(h, v2);
    h = merge(h, v3);
    h = merge(h, v4);
  } else {
    h = P5;
  }
  h = (h + BigInt(n)) & M64;
  for (; p + 8 <= n; p += 8) {
    h ^= round(0n, u64(dv, p));
    h = (mul(rotl(h, 27n), P1) + P4) & M64;
  }
  if (p + 4 <= n) {
    h ^= mul(BigInt(dv.getUint32(p, true)), P1);
    h = (mul(rotl(h, 23n), P2) + P3) & M64;
    p += 4;
  }
  for (; p < n; p++) {
    h ^= mul(BigInt(bytes[p]), P5);
    h = mul(rotl(h, 11n), P1);
  }
  h ^= h >> 33n;
  h = mul(h, P2);
  h ^= h >> 29n;
  h = mul(h, P3);
  h ^= h >> 32n;
  return h;
}

const utf8 = new TextEncoder();

/**
 * keyBytes is the encoding of a counter's key, as bucket.Key.AppendBinary
 * makes it: uvarint(policy's UTF-8 length), the policy, the key.
 */
export function keyBytes(policy, key) {
  const p = utf8.encode(policy);
  const k = utf8.encode(key);
  const head = [];
  let len = p.length;
  while (len >= 0x80) {
    head.push((len & 0x7f) | 0x80);
    len >>>= 7;
  }
  head.push(len);
  const out = new Uint8Array(head.length + p.length + k.length);
  out.set(head, 0);
  out.set(p, head.length);
  out.set(k, head.length + p.length);
  return out;
}

/** partitionOf returns the partition of (policy, key) in a table of `partitions` entries. */
export function partitionOf(policy, key, partitions) {
  return Number(xxhash64(keyBytes(policy, key)) % BigInt(partitions));
}

// Bounds of a ring view a node may send: far above any real cluster.
export const MAX_MEMBERS = 4096;
export const MAX_PARTITIONS = 1 << 20;

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^\s/:@[\]]+):(\d{1,5})$/;
const UNSPECIFIED = new Set(['0.0.0.0', '[::]', '']);

/**
 * parseRing checks a GET /v1/ring body and returns {version, members,
 * owners}, each member {name, url} where url is the member's HTTP API
 * (scheme from `scheme`) or null when it advertises no address a client
 * can reach (none, or an unspecified one such as 0.0.0.0). Throws a
 * TypeError on a malformed view.
 */
export function parseRing(body, scheme = 'http:') {
  if (!body || typeof body !== 'object') throw new TypeError('ring: not an object');
  const { version, members, owners } = body;
  if (typeof version !== 'string' || version === '') throw new TypeError('ring: no version');
  if (!Array.isArray(members) || members.length === 0 || members.length > MAX_MEMBERS) throw new TypeError('ring: bad members');
  if (!Array.isArray(owners) || owners.length === 0 || owners.length > MAX_PARTITIONS) throw new TypeError('ring: bad owners');
  const ms = members.map((m) => {
    if (!m || typeof m.name !== 'string') throw new TypeError('ring: bad member');
    const addr = typeof m.http_addr === 'string' ? m.http_addr : '';
    const hp = HOST_PORT.exec(addr);
    const ok = hp && !UNSPECIFIED.has(hp[1]) && Number(hp[2]) > 0 && Number(hp[2]) < 65536;
    return { name: m.name, url: ok ? `${scheme}//${addr}` : null };
  });
  const table = Int32Array.from(owners, (o) => {
    if (!Number.isInteger(o) || o < 0 || o >= ms.length) throw new TypeError(`ring: owner ${o} of ${ms.length} members`);
    return o;
  });
  return { version, members: ms, owners: table };
}

/** ownerOf returns the member of ring that owns (policy, key). */
export function ownerOf(ring, policy, key) {
  return ring.members[ring.owners[partitionOf(policy, key, ring.owners.length)]];
}
