import { describe, expect, it } from "vitest";
import { dedup, fingerprint, uniqueIds } from "./dedup.js";

const ev = (id: string, timeMs: number, q = "1") => ({
  id,
  type: "t",
  customer: "c",
  timeMs,
  receivedMs: timeMs,
  propKeys: ["q"],
  propValues: [q],
});
const day = Date.parse("2026-11-25T00:00:00Z");

describe("dedup", () => {
  it("keeps the first copy of an id within a batch and ledgers new ids", () => {
    const events = [ev("a", 1), ev("b", 2), ev("a", 3)];
    expect(uniqueIds(events)).toEqual(["a", "b"]);
    const r = dedup(events, new Map(), 2, day, new Set());
    expect(r.rows.map((x) => [x.id, x.ts])).toEqual([
      ["a", 1],
      ["b", 2],
    ]);
    expect(r.duplicates).toBe(1);
    expect(r.ledger.map((l) => [l.id, l.fp, l.bus_partition, l.seen_day])).toEqual([
      ["a", fingerprint(ev("a", 1)), 2, "2026-11-25"],
      ["b", fingerprint(ev("b", 2)), 2, "2026-11-25"],
    ]);
  });

  it("drops a retry whose timestamp or content differs from the ledgered copy", () => {
    const known = new Map([["a", fingerprint(ev("a", 1))]]);
    const r = dedup([ev("a", 2), ev("a", 1, "9")], known, 0, day, new Set());
    expect(r.rows).toEqual([]);
    expect(r.duplicates).toBe(2);
  });

  it("rewrites the ledgered copy itself (redelivery after a crash) without a new ledger row", () => {
    const known = new Map([["a", fingerprint(ev("a", 1))]]);
    const r = dedup([{ ...ev("a", 1), receivedMs: 99 }], known, 0, day, new Set());
    expect(r.rows.map((x) => x.id)).toEqual(["a"]);
    expect(r.ledger).toEqual([]);
    expect(r.rewrites).toBe(1);
  });

  it("drops an identical retry of a copy whose event row is written (no rewrite)", () => {
    const known = new Map([["a", fingerprint(ev("a", 1))]]);
    const r = dedup(
      [ev("a", 1), { ...ev("a", 1), receivedMs: 99 }, ev("b", 2)],
      known,
      0,
      day,
      new Set(["a"]),
    );
    expect(r.rows.map((x) => x.id)).toEqual(["b"]);
    expect(r.rewrites).toBe(0);
    expect(r.rewritten).toEqual([]);
    expect(r.duplicates).toBe(2);
  });

  it("fingerprints differ when any counted field differs", () => {
    const base = fingerprint(ev("a", 1));
    expect(fingerprint({ ...ev("a", 1), receivedMs: 5 })).toBe(base);
    for (const other of [
      ev("a", 2),
      ev("a", 1, "2"),
      { ...ev("a", 1), customer: "d" },
      { ...ev("a", 1), source: "s" },
    ]) {
      expect(fingerprint(other)).not.toBe(base);
    }
  });
});
