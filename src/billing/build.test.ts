import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Subscription, Versioned } from "../catalog/index.js";
import { parseCatalog, type Plan } from "../rating/index.js";
import {
  numberLines,
  rateRecord,
  ratingRecord,
  segmentsOf,
  trueUpLines,
  type SegmentUsage,
} from "./build.js";
import type { UsageSnapshot } from "./invoice.js";
import type { BillingPeriodSlot } from "./periods.js";

const growth: Versioned<Plan> = {
  ...parseCatalog(readFileSync("examples/plan.yaml", "utf8")).plans[0]!,
  version: 3,
  applied_at: "2026-01-01T00:00:00Z",
};
const starter: Versioned<Plan> = {
  ...growth,
  key: "starter",
  version: 1,
  prices: growth.prices.filter((p) => p.key !== "seats"),
  minimum_commitment: undefined,
  discounts: [],
};
const plans = new Map([
  ["growth", growth],
  ["starter", starter],
]);
const planOf = (k: string) => plans.get(k);
const planAt = (k: string, v: number) => {
  const p = plans.get(k)!;
  expect(p.version).toBe(v);
  return p;
};

const ms = Date.parse;
const nov: BillingPeriodSlot = {
  index: 8,
  start: ms("2026-11-01T00:00:00Z"),
  end: ms("2026-12-01T00:00:00Z"),
  from: ms("2026-11-01T00:00:00Z"),
  to: ms("2026-12-01T00:00:00Z"),
};
const sub: Subscription = {
  key: "acme-growth",
  customer: "acme",
  plan: "starter",
  started_at: "2026-03-01T00:00:00.000Z",
  phases: [{ at: "2026-11-16T00:00:00.000Z", plan: "growth" }],
  seats: { quantity: "12", schedule: [{ at: "2026-11-20T00:00:00.000Z", quantity: "20" }] },
  discounts: [],
  metadata: {},
};

function snap(meter: string, quantity: string): UsageSnapshot {
  return {
    meter,
    meter_version: 1,
    cutoff: "2026-12-01T01:00:00.000Z",
    watermark: "2026-12-01T01:00:05.000Z",
    quantity,
    event_count: 7,
    id_digest: "ab".repeat(16),
  };
}
const usage = (q: Record<string, string>): SegmentUsage =>
  new Map(Object.entries(q).map(([k, v]) => [k, snap(k, v)]));

describe("building an invoice from a period", () => {
  it("splits the period at a plan change and bills each segment's usage under its plan", () => {
    const segs = segmentsOf(sub, nov, planOf);
    expect(
      segs.map((s) => [s.plan.key, new Date(s.from).toISOString(), new Date(s.to).toISOString()]),
    ).toEqual([
      ["starter", "2026-11-01T00:00:00.000Z", "2026-11-16T00:00:00.000Z"],
      ["growth", "2026-11-16T00:00:00.000Z", "2026-12-01T00:00:00.000Z"],
    ]);
    const u = [usage({ api_calls: "2000000" }), usage({ api_calls: "13000000", emails_sent: "1500" })];
    const rec = ratingRecord(sub, nov, segs, u);
    expect(rec.seats).toBe("12");
    expect(rec.seat_changes).toEqual([{ at: "2026-11-20T00:00:00.000Z", seats: "20" }]);
    const rated = rateRecord(rec, planAt, sub.started_at);
    const lines = numberLines(rated.lines, segs, u);
    const apiLines = lines.filter((l) => l.kind === "usage" && l.meter === "api_calls");
    expect(apiLines.map((l) => [l.plan, l.quantity, l.snapshot?.quantity, l.number > 0])).toEqual([
      ["starter", "2000000", "2000000", true],
      ["growth", "13000000", "13000000", true],
    ]);
    expect(lines.map((l) => l.number)).toEqual(lines.map((_, i) => i + 1));
    expect(rated.total).toBe(lines.reduce((s, l) => s + l.amount, 0));
  });

  it("bills a period from where its service starts when that is after the period start (time zone change, billing start)", () => {
    // Billed from Nov 11 (the previous invoice ended there): 20 of 30 days of the flat fee,
    // usage only from then; the subscription started in March, so no start proration.
    const late: BillingPeriodSlot = { ...nov, from: ms("2026-11-11T00:00:00Z") };
    const plain = { ...sub, phases: [], seats: undefined };
    const segments = segmentsOf(plain, late, planOf);
    expect(segments.map((s) => new Date(s.from).toISOString())).toEqual(["2026-11-11T00:00:00.000Z"]);
    const rec = ratingRecord(plain, late, segments, [new Map([["api_calls", snap("api_calls", "0")]])]);
    const rated = rateRecord(rec, planAt, plain.started_at);
    const platform = rated.lines.find((l) => l.price === "platform")!;
    // 49900 × 20/30 = 33266.67 → 33267.
    expect(platform).toMatchObject({
      amount: 33267,
      period: { start: "2026-11-11T00:00:00.000Z", end: "2026-12-01T00:00:00.000Z" },
      proration: { seconds: String(20 * 86400), period_seconds: String(30 * 86400) },
    });
  });

  it("a true-up bills exactly what late usage changes, line by line, with the original service period", () => {
    const segs = segmentsOf({ ...sub, phases: [], plan: "growth" }, nov, planOf);
    const billedUsage = [usage({ api_calls: "9000000" })];
    const rec = ratingRecord({ ...sub, phases: [], plan: "growth" }, nov, segs, billedUsage);
    const billed = rateRecord(rec, planAt, sub.started_at);
    const nowUsage = [usage({ api_calls: "12000000" })];
    const now = rateRecord(rec, planAt, sub.started_at, [{ api_calls: "12000000" }]);
    const lines = trueUpLines(billed, now, { id: "inv_x" }, nowUsage, segs, 10);
    const api = lines.find((l) => l.meter === "api_calls")!;
    // 1M included; billable 8M at 0.02 → 11M: 9M at 0.02 + 2M at 0.01 (cents): +3M... exact below.
    expect(api.amount).toBe(
      now.lines.find((l) => l.meter === "api_calls")!.amount -
        billed.lines.find((l) => l.meter === "api_calls")!.amount,
    );
    expect(api).toMatchObject({
      number: 10,
      quantity: "12000000",
      period: { start: "2026-11-01T00:00:00.000Z" },
      true_up: { invoice: "inv_x", billed_quantity: "9000000" },
    });
    expect(api.snapshot?.quantity).toBe("12000000");
    expect(billed.total + lines.reduce((s, l) => s + l.amount, 0)).toBe(now.total);
    expect(trueUpLines(now, now, { id: "inv_x" }, nowUsage, segs, 1)).toEqual([]);
  });

  it("billed + every true-up = the period rated with all its usage, however the late usage arrives (property)", () => {
    const segs = segmentsOf({ ...sub, plan: "growth", phases: [] }, nov, planOf);
    const rec = ratingRecord({ ...sub, plan: "growth", phases: [] }, nov, segs, [usage({})]);
    const q = fc.bigInt({ min: 0n, max: 40_000_000n }).map(String);
    fc.assert(
      fc.property(
        fc.array(fc.record({ api_calls: q, emails_sent: q, storage_gb_hours: q, monthly_active_users: q }), {
          minLength: 1,
          maxLength: 4,
        }),
        (steps) => {
          // Usage only grows as late events arrive.
          let acc = { api_calls: 0n, emails_sent: 0n, storage_gb_hours: 0n, monthly_active_users: 0n };
          const readings = steps.map((s) => {
            acc = Object.fromEntries(
              Object.entries(acc).map(([k, v]) => [k, v + BigInt(s[k as keyof typeof s])]),
            ) as typeof acc;
            return Object.fromEntries(Object.entries(acc).map(([k, v]) => [k, String(v)]));
          });
          let billedSoFar = rateRecord(rec, planAt, sub.started_at, [readings[0]!]);
          let total = billedSoFar.total;
          for (const r of readings.slice(1)) {
            const now = rateRecord(rec, planAt, sub.started_at, [r]);
            total += trueUpLines(billedSoFar, now, { id: "inv" }, [usage(r)], segs, 1).reduce(
              (s, l) => s + l.amount,
              0,
            );
            billedSoFar = now;
          }
          expect(total).toBe(rateRecord(rec, planAt, sub.started_at, [readings.at(-1)!]).total);
        },
      ),
      { numRuns: 200 },
    );
  });
});
