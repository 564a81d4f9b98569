import { Readable } from "node:stream";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BloomFilter, bytesHashes, idHashes } from "./bloom.js";
import { readRowBinaryStrings } from "./ledger-filter.js";

const ids = fc.oneof(
  fc.uuid(),
  fc.string({ unit: "binary", maxLength: 256 }),
  fc.string({ unit: "grapheme", maxLength: 64 }),
  fc.string({ maxLength: 64 }),
);

describe("idHashes", () => {
  it("hashes a string exactly as its UTF-8 bytes (the build reads bytes, the lookup has strings)", () => {
    fc.assert(
      fc.property(ids, (s) => {
        const b = Buffer.from(s, "utf8");
        const fromBytes = bytesHashes(b, 0, b.length, { h1: 0, h2: 0 });
        expect(idHashes(s, { h1: 0, h2: 0 })).toEqual(fromBytes);
      }),
      { numRuns: 2000 },
    );
  });
});

describe("BloomFilter", () => {
  it("never answers 'not added' for an added id, whether added as a string or as bytes", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(ids, { maxLength: 300 }),
        fc.integer({ min: 1, max: 5000 }),
        (added, cap) => {
          const f = new BloomFilter(cap);
          added.forEach((id, i) => {
            if (i % 2 === 0) f.add(id);
            else {
              const b = Buffer.from(id, "utf8");
              f.addBytes(b, 0, b.length);
            }
          });
          for (const id of added) expect(f.mayContain(id)).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("keeps false positives within the bound at capacity, also for ids of one bus partition", () => {
    // The sink's ids are uuidv7-like strings of one partition (same fnv1a32(id) % 4), so the
    // positions must not be skewed by that shared residue.
    const n = 200_000;
    const f = new BloomFilter(n);
    const stamp = Date.now().toString(16).padStart(12, "0");
    const id = (i: number) =>
      `${stamp.slice(0, 8)}-${stamp.slice(8)}-7${(i * 2654435761) >>> 0}-${i.toString(16).padStart(12, "0")}`;
    for (let i = 0; i < n; i++) f.add(id(i));
    let missing = 0;
    for (let i = 0; i < n; i++) if (!f.mayContain(id(i))) missing++;
    expect(missing).toBe(0);
    let fp = 0;
    const probes = 200_000;
    for (let i = n; i < n + probes; i++) if (f.mayContain(id(i))) fp++;
    const rate = fp / probes;
    const expected = f.expectedFalsePositiveRate(n);
    expect(expected).toBeLessThan(0.01);
    // 200k probes: the standard deviation is ~0.02 %; 1.3× the theory is far outside noise.
    expect(rate).toBeLessThan(expected * 1.3);
    expect(f.bytes).toBe(Math.ceil((n * 10) / 32) * 4);
  });

  it("answers 'definitely new' for almost everything when empty or sparse", () => {
    const f = new BloomFilter(1_000_000);
    f.add("a");
    let fp = 0;
    for (let i = 0; i < 10_000; i++) if (f.mayContain(`x${i}`)) fp++;
    expect(fp).toBe(0);
  });
});

describe("readRowBinaryStrings", () => {
  function rowBinary(values: string[]): Buffer {
    const parts: Buffer[] = [];
    for (const v of values) {
      const b = Buffer.from(v, "utf8");
      const len: number[] = [];
      let n = b.length;
      do {
        len.push((n & 0x7f) | (n >= 0x80 ? 0x80 : 0));
        n >>>= 7;
      } while (n > 0);
      parts.push(Buffer.from(len), b);
    }
    return Buffer.concat(parts);
  }

  it("decodes every value, however the stream is cut into chunks", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.string({ unit: "binary", maxLength: 300 }), { maxLength: 50 }),
        fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 20 }),
        async (values, cuts) => {
          const all = rowBinary(values);
          const chunks: Buffer[] = [];
          for (let i = 0, c = 0; i < all.length; c++) {
            const len = cuts[c % cuts.length]!;
            chunks.push(all.subarray(i, i + len));
            i += len;
          }
          const seen: string[] = [];
          const n = await readRowBinaryStrings(Readable.from(chunks), (b, s, e) =>
            seen.push(Buffer.from(b.subarray(s, e)).toString("utf8")),
          );
          expect(n).toBe(values.length);
          expect(seen).toEqual(values);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("refuses a stream that ends inside a value", async () => {
    const all = rowBinary(["abcdef"]);
    await expect(readRowBinaryStrings(Readable.from([all.subarray(0, 4)]), () => undefined)).rejects.toThrow(
      /ended inside a value/,
    );
  });
});
