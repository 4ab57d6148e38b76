// The ring a ratelimitd cluster publishes (GET /v1/ring), and the owner of
// a key in it, computed as the nodes compute it (cluster/ringview.go): a
// key's partition is xxhash64 of its encoding (bucket.Key.AppendBinary:
// the policy's byte length as a uvarint, the policy, the key, in UTF-8)
// modulo the number of partitions, and owners[partition] is the index of
// its owner among the members.
//
// xxhash64 is written out here (the reference algorithm with seed 0, in
// 32-bit halves, so that a hash allocates nothing: BigInt arithmetic cost
// 10x more) rather than taken from a package: the client has no runtime
// dependency and runs on the Edge runtime, where the WebAssembly builds
// cannot be compiled and the native ones do not load. test/ring.test.js
// checks it against the Go implementation the nodes use.

// 64-bit values are (hi, lo) pairs of uint32. The operations leave their
// result in H and L.
let H = 0;
let L = 0;

// The primes, as [hi, lo].
const P1 = [0x9e3779b1, 0x85ebca87];
const P2 = [0xc2b2ae3d, 0x27d4eb4f];
const P3 = [0x165667b1, 0x9e3779f9];
const P4 = [0x85ebca77, 0xc2b2ae63];
const P5 = [0x27d4eb2f, 0x165667c5];

// mulhi returns the high 32 bits of the 64-bit product of a and b.
function mulhi(a, b) {
  const ah = a >>> 16;
  const al = a & 0xffff;
  const bh = b >>> 16;
  const bl = b & 0xffff;
  const t = al * bl;
  const u = ah * bl + (t >>> 16);
  const v = al * bh + (u & 0xffff);
  return (ah * bh + Math.floor(u / 65536) + Math.floor(v / 65536)) >>> 0;
}

// mul sets (H, L) to (ah, al) × (bh, bl) mod 2^64.
function mul(ah, al, bh, bl) {
  const lo = Math.imul(al, bl) >>> 0;
  H = (mulhi(al, bl) + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0;
  L = lo;
}

// add sets (H, L) to (ah, al) + (bh, bl) mod 2^64.
function add(ah, al, bh, bl) {
  const lo = al + bl;
  H = (ah + bh + (lo > 0xffffffff ? 1 : 0)) >>> 0;
  L = lo >>> 0;
}

// rotl sets (H, L) to (h, l) rotated left by r bits, 0 < r < 64.
function rotl(h, l, r) {
  if (r >= 32) {
    const t = h;
    h = l;
    l = t;
    r -= 32;
  }
  if (r === 0) {
    H = h;
    L = l;
    return;
  }
  H = ((h << r) | (l >>> (32 - r))) >>> 0;
  L = ((l << r) | (h >>> (32 - r))) >>> 0;
}

// round sets (H, L) to rotl(acc + input × P2, 31) × P1.
function round(acch, accl, inh, inl) {
  mul(inh, inl, P2[0], P2[1]);
  add(acch, accl, H, L);
  rotl(H, L, 31);
  mul(H, L, P1[0], P1[1]);
}

/** xxhash64 returns the XXH64 hash (seed 0) of bytes, a Uint8Array, as a BigInt. */
export function xxhash64(bytes) {
  const [h, l] = xxhash64Parts(bytes);
  return (BigInt(h) << 32n) | BigInt(l);
}

// xxhash64Parts returns the hash as [hi, lo] uint32s.
function xxhash64Parts(bytes) {
  const n = bytes.length;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 0;
  let hh;
  let hl;
  if (n >= 32) {
    add(P1[0], P1[1], P2[0], P2[1]);
    let v1h = H;
    let v1l = L;
    let v2h = P2[0];
    let v2l = P2[1];
    let v3h = 0;
    let v3l = 0;
    add(~P1[0] >>> 0, ~P1[1] >>> 0, 0, 1); // -P1
    let v4h = H;
    let v4l = L;
    for (; p + 32 <= n; p += 32) {
      round(v1h, v1l, dv.getUint32(p + 4, true), dv.getUint32(p, true));
      v1h = H;
      v1l = L;
      round(v2h, v2l, dv.getUint32(p + 12, true), dv.getUint32(p + 8, true));
      v2h = H;
      v2l = L;
      round(v3h, v3l, dv.getUint32(p + 20, true), dv.getUint32(p + 16, true));
      v3h = H;
      v3l = L;
      round(v4h, v4l, dv.getUint32(p + 28, true), dv.getUint32(p + 24, true));
      v4h = H;
      v4l = L;
    }
    rotl(v1h, v1l, 1);
    hh = H;
    hl = L;
    rotl(v2h, v2l, 7);
    add(hh, hl, H, L);
    hh = H;
    hl = L;
    rotl(v3h, v3l, 12);
    add(hh, hl, H, L);
    hh = H;
    hl = L;
    rotl(v4h, v4l, 18);
    add(hh, hl, H, L);
    hh = H;
    hl = L;
    for (const [vh, vl] of [[v1h, v1l], [v2h, v2l], [v3h, v3l], [v4h, v4l]]) {
      round(0, 0, vh, vl);
      mul((hh ^ H) >>> 0, (hl ^ L) >>> 0, P1[0], P1[1]);
      add(H, L, P4[0], P4[1]);
      hh = H;
      hl = L;
    }
  } else {
    hh = P5[0];
    hl = P5[1];
  }
  add(hh, hl, Math.floor(n / 0x100000000), n >>> 0);
  hh = H;
  hl = L;
  for (; p + 8 <= n; p += 8) {
    round(0, 0, dv.getUint32(p + 4, true), dv.getUint32(p, true));
    rotl((hh ^ H) >>> 0, (hl ^ L) >>> 0, 27);
    mul(H, L, P1[0], P1[1]);
    add(H, L, P4[0], P4[1]);
    hh = H;
    hl = L;
  }
  if (p + 4 <= n) {
    mul(0, dv.getUint32(p, true), P1[0], P1[1]);
    rotl((hh ^ H) >>> 0, (hl ^ L) >>> 0, 23);
    mul(H, L, P2[0], P2[1]);
    add(H, L, P3[0], P3[1]);
    hh = H;
    hl = L;
    p += 4;
  }
  for (; p < n; p++) {
    mul(0, bytes[p], P5[0], P5[1]);
    rotl((hh ^ H) >>> 0, (hl ^ L) >>> 0, 11);
    mul(H, L, P1[0], P1[1]);
    hh = H;
    hl = L;
  }
  // Avalanche: h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32.
  hl = (hl ^ (hh >>> 1)) >>> 0;
  mul(hh, hl, P2[0], P2[1]);
  hh = (H ^ (H >>> 29)) >>> 0;
  hl = (L ^ (((L >>> 29) | (H << 3)) >>> 0)) >>> 0;
  mul(hh, hl, P3[0], P3[1]);
  hh = H;
  hl = (L ^ H) >>> 0;
  return [hh, hl];
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

let scratch = new Uint8Array(256);

// encodeKey writes the encoding of keyBytes into scratch and returns a
// view of it, valid until the next call.
function encodeKey(policy, key) {
  const need = 5 + 3 * (policy.length + key.length); // a UTF-16 unit is at most 3 UTF-8 bytes
  if (scratch.length < need) scratch = new Uint8Array(Math.max(need, 2 * scratch.length));
  const plen = utf8.encodeInto(policy, scratch.subarray(5)).written;
  let start = 5;
  let len = plen;
  const head = [];
  while (len >= 0x80) {
    head.push((len & 0x7f) | 0x80);
    len >>>= 7;
  }
  head.push(len);
  start -= head.length;
  scratch.set(head, start);
  const klen = utf8.encodeInto(key, scratch.subarray(5 + plen)).written;
  return scratch.subarray(start, 5 + plen + klen);
}

/** partitionOf returns the partition of (policy, key) in a table of `partitions` entries (at most 2^21). */
export function partitionOf(policy, key, partitions) {
  const [h, l] = xxhash64Parts(encodeKey(policy, key));
  // (h·2^32 + l) mod m, exact in doubles for m ≤ 2^21: 2^32 mod m < 2^21, (h mod m) < 2^21.
  return (((h % partitions) * (0x100000000 % partitions)) % partitions + (l % partitions)) % partitions;
}

// Bounds of a ring view a node may send: far above any real cluster.
export const MAX_MEMBERS = 4096;
export const MAX_PARTITIONS = 1 << 20; // partitionOf is exact up to 2^21

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
