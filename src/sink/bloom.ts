/**
 * A Bloom filter over event ids: "definitely never added" or "possibly added". Never a false
 * negative: an id that was added always answers possibly-added, which is the only property the
 * sink's exactly-once relies on (see ledger-filter.ts); a false positive only costs a ledger
 * lookup that would have happened without the filter anyway.
 *
 * Written here rather than taken from npm: `bloom-filters` 3.0.4 measured 55k adds/s and 59k
 * lookups/s on the 2-core bench machine (JS xxhash over strings, arrays of indexes per call),
 * while one partition's filter is built from ~25M ledger ids (100M ids / 4 partitions). This
 * one hashes each id once, allocation-free, into two 32-bit hashes and derives the k bit
 * positions by double hashing (Kirsch–Mitzenmacher), over a `Uint32Array` of bits.
 *
 * Ids are hashed as their UTF-8 bytes, so the filter can be built straight from the bytes
 * ClickHouse streams (RowBinary) without decoding them into strings, and looked up with the JS
 * string: {@link idHashes} and {@link bytesHashes} agree for every well-formed string (the edge
 * refuses ids with lone surrogates: events/normalize.ts).
 */

/** Bits per expected id: 10 bits and 7 hashes give ~0.8 % false positives at capacity. */
export const defaultBitsPerId = 10;

/** The two hashes of an id; `h2` is forced odd so that the k positions are distinct mod 2^n. */
export interface IdHashes {
  h1: number;
  h2: number;
}

/**
 * Two 32-bit hashes of a byte sequence: two FNV-1a-style lanes with different primes and
 * bases, each finished with MurmurHash3's avalanche (fmix32). The finisher matters: within a
 * bus partition every id has the same `fnv1a32(id) % partitions`, and FNV's low bits depend only
 * on the low bits of the input, so without it the filter's positions would be skewed.
 */
function finish(a: number, b: number, out: IdHashes): IdHashes {
  out.h1 = fmix32(a);
  out.h2 = (fmix32(b) | 1) >>> 0;
  return out;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const basisA = 0x811c9dc5;
const basisB = 0x3c6ef372;
const primeA = 0x01000193;
const primeB = 0x5bd1e995;

/** {@link IdHashes} of `bytes[start, end)` (UTF-8). Writes into and returns `out`. */
export function bytesHashes(bytes: Uint8Array, start: number, end: number, out: IdHashes): IdHashes {
  let a = basisA;
  let b = basisB;
  for (let i = start; i < end; i++) {
    const c = bytes[i]!;
    a = Math.imul(a ^ c, primeA);
    b = Math.imul(b ^ c, primeB);
  }
  return finish(a, b, out);
}

/**
 * {@link IdHashes} of the UTF-8 encoding of `s`, without encoding it (no allocation): the same
 * value as `bytesHashes(Buffer.from(s, "utf8"), ...)` for well-formed strings.
 */
export function idHashes(s: string, out: IdHashes): IdHashes {
  let a = basisA;
  let b = basisB;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      a = Math.imul(a ^ c, primeA);
      b = Math.imul(b ^ c, primeB);
      continue;
    }
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    // A lone surrogate is hashed as U+FFFD, as Buffer.from would encode it.
    if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
    let n: number;
    let first: number;
    if (c < 0x800) {
      n = 1;
      first = 0xc0 | (c >> 6);
    } else if (c < 0x10000) {
      n = 2;
      first = 0xe0 | (c >> 12);
    } else {
      n = 3;
      first = 0xf0 | (c >> 18);
    }
    a = Math.imul(a ^ first, primeA);
    b = Math.imul(b ^ first, primeB);
    for (let k = n - 1; k >= 0; k--) {
      const byte = 0x80 | ((c >> (6 * k)) & 0x3f);
      a = Math.imul(a ^ byte, primeA);
      b = Math.imul(b ^ byte, primeB);
    }
  }
  return finish(a, b, out);
}

/** A Bloom filter sized for `capacity` ids at `bitsPerId` bits each. */
export class BloomFilter {
  readonly bits: number;
  readonly hashes: number;
  private readonly words: Uint32Array;
  private readonly scratch: IdHashes = { h1: 0, h2: 0 };
  /** Ids added (with repeats), for sizing decisions. */
  added = 0;

  constructor(
    readonly capacity: number,
    bitsPerId = defaultBitsPerId,
  ) {
    // At least 2^10 bits; below 2^32 so that positions stay exact in doubles mod `bits`.
    this.bits = Math.min(2 ** 32 - 32, Math.max(1024, Math.ceil((capacity * bitsPerId) / 32) * 32));
    this.hashes = Math.max(1, Math.round((this.bits / Math.max(1, capacity)) * Math.LN2));
    this.words = new Uint32Array(this.bits / 32);
  }

  /** Bytes of memory the bit array holds. */
  get bytes(): number {
    return this.words.byteLength;
  }

  add(id: string): void {
    const h = idHashes(id, this.scratch);
    this.addHashPair(h.h1, h.h2);
  }

  /** Adds the id whose UTF-8 bytes are `bytes[start, end)`. */
  addBytes(bytes: Uint8Array, start: number, end: number): void {
    const h = bytesHashes(bytes, start, end, this.scratch);
    this.addHashPair(h.h1, h.h2);
  }

  /** False: `id` was never added. True: it possibly was. */
  mayContain(id: string): boolean {
    const { h1, h2 } = idHashes(id, this.scratch);
    const m = this.bits;
    for (let i = 0; i < this.hashes; i++) {
      const pos = (h1 + i * h2) % m;
      if ((this.words[pos >>> 5]! & (1 << (pos & 31))) === 0) return false;
    }
    return true;
  }

  /** Expected false-positive rate after `n` distinct adds: (1 − e^(−kn/m))^k. */
  expectedFalsePositiveRate(n = this.added): number {
    return (1 - Math.exp((-this.hashes * n) / this.bits)) ** this.hashes;
  }

  /** Adds an id by its {@link IdHashes} (journaled hashes are replayed this way). */
  protected addHashPair(h1: number, h2: number): void {
    const m = this.bits;
    // h1 + i*h2 < 2^32 + 64·2^32: exact in a double, so every caller computes the same positions.
    for (let i = 0; i < this.hashes; i++) {
      const pos = (h1 + i * h2) % m;
      this.words[pos >>> 5]! |= 1 << (pos & 31);
    }
    this.added++;
  }
}
