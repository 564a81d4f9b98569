import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { boundary, boundaryIndexAt, endedPeriods, periodAt, periodFrom, type PeriodRule } from "./periods.js";

const ms = (iso: string) => Date.parse(iso);
const iso = (t: number) => new Date(t).toISOString();

function rule(over: Partial<PeriodRule> & Pick<PeriodRule, "anchorMs">): PeriodRule {
  return { interval: "month", intervalCount: 1, timezone: "UTC", startMs: over.anchorMs, ...over };
}

describe("billing periods", () => {
  it("after a time zone change, the period from the last billed end joins the new boundaries (no gap, no overlap)", () => {
    // Billed under UTC up to Nov 1 00:00 UTC; now in Berlin, calendar months from local midnight.
    const berlin = rule({ timezone: "Europe/Berlin", anchorMs: ms("2025-12-31T23:00:00Z") });
    const joining = periodFrom(berlin, ms("2026-11-01T00:00:00Z"), 7);
    expect([iso(joining.start), iso(joining.end), iso(joining.from), iso(joining.to)]).toEqual([
      "2026-10-31T23:00:00.000Z",
      "2026-11-30T23:00:00.000Z",
      "2026-11-01T00:00:00.000Z", // billed from where the last invoice ended: 1 hour less
      "2026-11-30T23:00:00.000Z",
    ]);
    expect(joining.index).toBe(7);
    const next = periodFrom(berlin, joining.to, 8);
    expect([iso(next.start), iso(next.from), iso(next.to)]).toEqual([
      "2026-11-30T23:00:00.000Z",
      "2026-11-30T23:00:00.000Z",
      "2026-12-31T23:00:00.000Z",
    ]);
    // The subscription's end still ends the period.
    const ending = periodFrom({ ...berlin, endMs: ms("2026-11-15T12:00:00Z") }, joining.from, 7);
    expect(iso(ending.to)).toBe("2026-11-15T12:00:00.000Z");
  });

  it("a calendar month in Berlin starts at 23:00 UTC in winter and 22:00 UTC in summer", () => {
    const r = rule({ timezone: "Europe/Berlin", anchorMs: ms("2025-12-31T23:00:00Z") });
    const starts = Array.from({ length: 12 }, (_, k) => iso(boundary(r, k)));
    expect(starts).toEqual([
      "2025-12-31T23:00:00.000Z",
      "2026-01-31T23:00:00.000Z",
      "2026-02-28T23:00:00.000Z",
      "2026-03-31T22:00:00.000Z", // CEST from 29 March
      "2026-04-30T22:00:00.000Z",
      "2026-05-31T22:00:00.000Z",
      "2026-06-30T22:00:00.000Z",
      "2026-07-31T22:00:00.000Z",
      "2026-08-31T22:00:00.000Z",
      "2026-09-30T22:00:00.000Z",
      "2026-10-31T23:00:00.000Z", // CET again from 25 October
      "2026-11-30T23:00:00.000Z",
    ]);
  });

  it("an anchor on the 31st bills to the last day of shorter months and comes back to the 31st", () => {
    const r = rule({ anchorMs: ms("2026-01-31T00:00:00Z") });
    expect([1, 2, 3, 4].map((k) => iso(boundary(r, k)))).toEqual([
      "2026-02-28T00:00:00.000Z",
      "2026-03-31T00:00:00.000Z",
      "2026-04-30T00:00:00.000Z",
      "2026-05-31T00:00:00.000Z",
    ]);
    // Backwards from the anchor too.
    expect(iso(boundary(r, -2))).toBe("2025-11-30T00:00:00.000Z");
  });

  it("a subscription starting mid-period has a partial first period; one ending mid-period a partial last", () => {
    const r = rule({
      timezone: "America/New_York",
      anchorMs: ms("2026-01-01T05:00:00Z"), // 1 January, local midnight (EST)
      startMs: ms("2026-03-10T15:00:00Z"),
      endMs: ms("2026-05-20T12:00:00Z"),
    });
    const periods = endedPeriods(r, ms("2027-01-01T00:00:00Z")).map((p) => ({
      index: p.index,
      start: iso(p.start),
      end: iso(p.end),
      from: iso(p.from),
      to: iso(p.to),
    }));
    expect(periods).toEqual([
      {
        index: 0,
        start: "2026-03-01T05:00:00.000Z",
        end: "2026-04-01T04:00:00.000Z",
        from: "2026-03-10T15:00:00.000Z",
        to: "2026-04-01T04:00:00.000Z",
      },
      {
        index: 1,
        start: "2026-04-01T04:00:00.000Z",
        end: "2026-05-01T04:00:00.000Z",
        from: "2026-04-01T04:00:00.000Z",
        to: "2026-05-01T04:00:00.000Z",
      },
      {
        index: 2,
        start: "2026-05-01T04:00:00.000Z",
        end: "2026-06-01T04:00:00.000Z",
        from: "2026-05-01T04:00:00.000Z",
        to: "2026-05-20T12:00:00.000Z",
      },
    ]);
  });

  it("only periods whose whole interval has ended are closed; periodAt finds the current one", () => {
    const r = rule({ anchorMs: ms("2026-01-01T00:00:00Z") });
    expect(endedPeriods(r, ms("2026-03-01T00:00:00Z")).map((p) => iso(p.end))).toEqual([
      "2026-02-01T00:00:00.000Z",
      "2026-03-01T00:00:00.000Z",
    ]);
    expect(endedPeriods(r, ms("2026-02-28T23:59:59.999Z"))).toHaveLength(1);
    const now = periodAt(r, ms("2026-03-15T00:00:00Z"))!;
    expect([iso(now.start), iso(now.end), now.index]).toEqual([
      "2026-03-01T00:00:00.000Z",
      "2026-04-01T00:00:00.000Z",
      2,
    ]);
    expect(periodAt(r, ms("2025-12-31T00:00:00Z"))).toBeNull();
  });

  it("periods tile the subscription exactly, in any zone, interval and anchor (property)", () => {
    const zones = [
      "UTC",
      "Europe/Berlin",
      "America/St_Johns",
      "Australia/Lord_Howe",
      "Asia/Kolkata",
      "Pacific/Chatham",
    ];
    fc.assert(
      fc.property(
        fc.constantFrom(...zones),
        fc.constantFrom("day" as const, "week" as const, "month" as const, "year" as const),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: ms("2020-01-01T00:00:00Z"), max: ms("2030-01-01T00:00:00Z") }),
        fc.integer({ min: 0, max: 400 * 86_400_000 }),
        fc.integer({ min: 1, max: 200 * 86_400_000 }),
        (timezone, interval, intervalCount, anchorMs, startOffset, length) => {
          const startMs = anchorMs + startOffset;
          const r: PeriodRule = {
            interval,
            intervalCount,
            timezone,
            anchorMs,
            startMs,
            endMs: startMs + length,
          };
          const periods = endedPeriods(r, startMs + length + 5 * 366 * 86_400_000);
          expect(periods[0]!.from).toBe(startMs);
          expect(periods.at(-1)!.to).toBe(startMs + length);
          for (const [i, p] of periods.entries()) {
            expect(p.index).toBe(i);
            expect(p.start).toBeLessThanOrEqual(p.from);
            expect(p.from).toBeLessThan(p.to);
            expect(p.to).toBeLessThanOrEqual(p.end);
            if (i > 0) expect(p.start).toBe(periods[i - 1]!.end);
            expect(boundaryIndexAt(r, p.start)).toBe(boundaryIndexAt(r, p.from));
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
