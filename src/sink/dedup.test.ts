import { describe, expect, it } from "vitest";
import { dedup, uniqueIds } from "./dedup.js";

const ev = (id: string, timeMs: number) => ({
  id,
  type: "t",
  customer: "c",
  timeMs,
  receivedMs: timeMs,
  propKeys: [],
  propValues: [],
});

describe("dedup", () => {
  it("keeps the first copy of an id in bus order and drops ids the ledger holds", () => {
    const events = [ev("a", 1), ev("b", 2), ev("a", 3), ev("c", 4)];
    expect(uniqueIds(events)).toEqual(["a", "b", "c"]);
    const r = dedup(events, new Set(["c"]), 2, Date.parse("2026-11-25T00:00:00Z"));
    expect(r.rows.map((x) => [x.id, x.ts])).toEqual([
      ["a", 1],
      ["b", 2],
    ]);
    expect(r.duplicates).toBe(2);
    expect(r.ledger).toEqual([
      { id: "a", customer: "c", type: "t", ts: 1, bus_partition: 2, seen_day: "2026-11-25" },
      { id: "b", customer: "c", type: "t", ts: 2, bus_partition: 2, seen_day: "2026-11-25" },
    ]);
  });
});
