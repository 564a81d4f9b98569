import { createHash } from "node:crypto";

const mask = (1n << 64n) - 1n;

/** Two 64-bit lanes as 32 lowercase hex characters. */
export function digestHex(d1: bigint, d2: bigint): string {
  return (d1 & mask).toString(16).padStart(16, "0") + (d2 & mask).toString(16).padStart(16, "0");
}

/**
 * The order-independent digest of a set of event ids that every invoice line carries
 * (`id_digest`), so anyone can check that a line was computed from exactly the events listed:
 * for each id, SHA-256 of its UTF-8 bytes; add up, modulo 2^64, the first 8 bytes and
 * (separately) the next 8 bytes, each read as a little-endian unsigned integer; write both sums
 * as 16 hex digits. ClickHouse computes the same in the close (`usageEvidence`).
 *
 * @example
 * ```ts
 * idDigest(["evt-1", "evt-2"]) === idDigest(["evt-2", "evt-1"]); // true
 * ```
 */
export function idDigest(ids: Iterable<string>): string {
  let a = 0n;
  let b = 0n;
  for (const id of ids) {
    const h = createHash("sha256").update(id, "utf8").digest();
    a = (a + h.readBigUInt64LE(0)) & mask;
    b = (b + h.readBigUInt64LE(8)) & mask;
  }
  return digestHex(a, b);
}
