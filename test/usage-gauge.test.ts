import { monitorEventLoopDelay } from "node:perf_hooks";
import Big from "big.js";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Meter } from "../src/catalog/index.js";
import { createClickHouse, ident, lit, migrate, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import {
  maxWindows,
  queryUsage,
  UsageRequestError,
  windowsOf,
  type UsageDeps,
  type UsageRequest,
  type Window,
  type WindowSize,
} from "../src/usage/index.js";
import { guid, testConfig } from "./helpers.js";

// Gauges (time_weighted_sum/avg, peak) through queryUsage against the suite's real ClickHouse:
// the same answers as the implementation they replaced (which weighed every point in every
// window, O(windows × points), on the edge's event loop), and bounded work for a per-second
// gauge over a month.

let config: Config;
let ch: ClickHouseClient;
let db: string;

const day = 86_400_000;
const from30 = Date.UTC(2026, 5, 1);

function gaugeMeter(aggregation: "time_weighted_sum" | "time_weighted_avg" | "peak", type: string): Meter {
  return {
    key: `g_${aggregation}`,
    event_type: type,
    aggregation,
    value_property: "level",
    time_unit: "minute",
    version: 1,
    applied_at: "2026-01-01T00:00:00Z",
  };
}

const gauges = ["time_weighted_sum", "time_weighted_avg", "peak"] as const;

function deps(watermarkMs: number): UsageDeps {
  // The watermark is an input of the answer; a fixed one makes both implementations see the same.
  return { clickhouse: ch, database: db, watermarks: { current: () => Promise.resolve(watermarkMs) } };
}

interface Point {
  ts: number;
  id: string;
  v: string;
}

async function insertPoints(customer: string, type: string, points: readonly Point[]): Promise<void> {
  if (points.length === 0) return;
  const values = points
    .map(
      (p) =>
        `(${lit(customer)}, ${lit(type)}, ${lit(p.ts)}, ${lit(p.id)}, ${lit(p.ts)}, 'test', ['level'], [${lit(p.v)}])`,
    )
    .join(",");
  await ch.command({
    query: `INSERT INTO ${ident(db)}.events (customer, type, ts, id, received, source, prop_keys, prop_values) VALUES ${values}`,
  });
}

/**
 * The gauge computation before this change (src/usage/query.ts at fd4fcba), verbatim but for
 * its inputs: every point weighed against every window. The oracle of the differential test.
 */
function oldGauge(
  agg: (typeof gauges)[number],
  points: readonly Point[],
  carry: Point | null,
  windows: readonly Window[],
  fromMs: number,
  toMs: number,
  watermark: number,
  unitMs: number,
): (string | null)[] | null {
  const D = Big();
  D.DP = 9;
  D.RM = Big.roundHalfUp;
  const valid = /^-?[0-9]{1,20}(\.[0-9]{1,9})?$/;
  const pts = points
    .filter((p) => valid.test(p.v) && p.ts >= fromMs && p.ts < toMs)
    .map((p) => ({ ts: p.ts, id: p.id, v: new D(p.v) }));
  if (carry !== null) pts.push({ ts: fromMs, id: "", v: new D(carry.v) });
  if (pts.length === 0) return null;
  pts.sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const fixed = (v: Big) => v.toFixed().replace(/^-0$/, "0");
  const last = pts[pts.length - 1]!;
  const horizon = Math.min(toMs, Math.max(watermark, last.ts + 1));
  return windows.map((w) => {
    let weighted = new D(0);
    let covered = 0;
    let peak: Big | null = null;
    pts.forEach((p, i) => {
      const segEnd = Math.min(pts[i + 1]?.ts ?? horizon, horizon);
      const a = Math.max(p.ts, w.fromMs);
      const b = Math.min(segEnd, w.toMs);
      if (p.ts >= w.fromMs && p.ts < w.toMs && (peak === null || p.v.gt(peak))) peak = p.v;
      if (b <= a) return;
      if (peak === null || p.v.gt(peak)) peak = p.v;
      weighted = weighted.plus(p.v.times(b - a));
      covered += b - a;
    });
    switch (agg) {
      case "time_weighted_sum":
        return covered === 0 ? "0" : fixed(weighted.div(unitMs));
      case "time_weighted_avg":
        return covered === 0 ? null : fixed(weighted.div(covered));
      default:
        // The old code printed a "-0" level as "-0"; the new one prints "0" (normalised here).
        return peak === null ? null : fixed(peak);
    }
  });
}

beforeAll(async () => {
  config = testConfig();
  db = config.clickhouse.database;
  // A long timeout: the month of per-second points is inserted in one statement.
  ch = createClickHouse({ ...config.clickhouse, timeoutMs: 300_000 });
  await migrate(ch, db);
}, 60_000);

afterAll(async () => {
  await ch?.close();
});

describe("gauges: same answers as the O(windows × points) implementation (fast-check, real ClickHouse)", () => {
  const base = Date.UTC(2026, 2, 27); // Berlin springs forward on March 29
  const span = 4 * day;
  const value = fc.oneof(
    fc.integer({ min: -50, max: 1000 }).map(String),
    fc
      .tuple(fc.integer({ min: -5, max: 99 }), fc.integer({ min: 0, max: 999_999_999 }))
      .map(([i, f]) => `${i}.${String(f).padStart(9, "0")}`),
    fc.constantFrom("0", "-0", "12.50", "99999999999999999999", "not-a-number", ""),
  );
  const point = fc.record({
    // Clustered instants make ties (same ms, ordered by id) and zero-length levels likely.
    ts: fc.oneof(
      fc.integer({ min: base - day, max: base + span }),
      fc.integer({ min: 0, max: 40 }).map((k) => base + k * 3_600_000),
    ),
    id: fc.stringMatching(/^[a-z0-9]{1,6}$/),
    v: value,
  });
  const question = fc.record({
    fromOff: fc.integer({ min: 0, max: span - 1 }),
    len: fc.integer({ min: 1, max: span }),
    window: fc.constantFrom<WindowSize | undefined>(undefined, "minute", "hour", "day"),
    tz: fc.constantFrom("UTC", "Europe/Berlin", "Asia/Kolkata", "Asia/Kathmandu"),
    wmOff: fc.integer({ min: -day, max: span + day }),
  });

  it("time_weighted_sum, time_weighted_avg and peak agree on random points, windows, zones and watermarks", async () => {
    const type = `gauge_${guid()}`;
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(point, { selector: (p) => p.id, maxLength: 40 }),
        question,
        async (pts, q) => {
          const customer = `c${runs++}`;
          await insertPoints(customer, type, pts);
          const fromMs = base + q.fromOff;
          let toMs = Math.min(fromMs + q.len, base + span);
          if (q.window === "minute") toMs = Math.min(toMs, fromMs + 2 * 3_600_000);
          if (toMs <= fromMs) toMs = fromMs + 1;
          const windows = windowsOf(fromMs, toMs, q.window, q.tz);
          const valid = /^-?[0-9]{1,20}(\.[0-9]{1,9})?$/;
          const before = pts
            .filter((p) => p.ts < fromMs && valid.test(p.v))
            .sort((a, b) => b.ts - a.ts || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
          const watermark = base + q.wmOff;
          for (const agg of gauges) {
            const req: UsageRequest = {
              meter: gaugeMeter(agg, type),
              customer,
              fromMs,
              toMs,
              window: q.window,
              tz: q.tz,
            };
            const got = await queryUsage(deps(watermark), req);
            const expected = oldGauge(agg, pts, before[0] ?? null, windows, fromMs, toMs, watermark, 60_000);
            // No level at all: the old and the new code both answer the empty value per window.
            const empty = agg === "time_weighted_sum" ? "0" : null;
            expect(
              got.data.map((r) => r.value),
              `${agg} ${JSON.stringify({ q, pts })}`,
            ).toEqual(expected ?? windows.map(() => empty));
            const invalid = pts.filter((p) => p.ts >= fromMs && p.ts < toMs && !valid.test(p.v)).length;
            expect(got.invalid_values).toBe(invalid);
          }
        },
      ),
      // No shrinking: a failure prints its input; shrinking would re-run hundreds of queries.
      { numRuns: 30, endOnFailure: true },
    );
  }, 240_000);
});

/** The 60 levels of the minute starting at `ms` (level = seconds since `from30`, mod 100). */
function minuteLevels(ms: number): number[] {
  const first = (ms - from30) / 1000;
  return Array.from({ length: 60 }, (_, i) => (first + i) % 100);
}

describe("gauges: bounded work for a per-second gauge over a month", () => {
  const type = "per_second";
  const customer = "busy";
  const seconds = 30 * 86_400;

  beforeAll(async () => {
    // 2,592,000 points, one per second for 30 days, levels 0..99 (inserted by ClickHouse itself).
    await ch.command({
      query: `INSERT INTO ${ident(db)}.events (customer, type, ts, id, received, source, prop_keys, prop_values)
SELECT ${lit(customer)}, ${lit(type)}, ${lit(from30)} + number * 1000, concat('p', toString(number)),
  ${lit(from30)} + number * 1000, 'test', ['level'], [toString(number % 100)]
FROM system.numbers LIMIT ${lit(seconds)}`,
    });
  }, 120_000);

  it("answers minute windows over a week and hour windows over the month without blocking the event loop", async () => {
    const toMs = from30 + seconds * 1000;
    const week = { fromMs: toMs - (maxWindows - 100) * 60_000, toMs, window: "minute", tz: "UTC" } as const;
    const month = { fromMs: from30, toMs, window: "hour", tz: "Europe/Berlin" } as const;
    // Baseline: what this (shared, loaded) machine's scheduling alone does to the event loop.
    const idle = monitorEventLoopDelay({ resolution: 10 });
    idle.enable();
    await new Promise((r) => setTimeout(r, 2000));
    idle.disable();
    const h = monitorEventLoopDelay({ resolution: 10 });
    h.enable();
    const t0 = performance.now();
    const tws = await queryUsage(deps(toMs), {
      meter: gaugeMeter("time_weighted_sum", type),
      customer,
      ...month,
    });
    const twa = await queryUsage(deps(toMs), {
      meter: gaugeMeter("time_weighted_avg", type),
      customer,
      ...week,
    });
    const peak = await queryUsage(deps(toMs), { meter: gaugeMeter("peak", type), customer, ...week });
    const elapsed = performance.now() - t0;
    h.disable();
    const maxDelayMs = h.max / 1e6;
    console.info(
      `per-second gauge, ${seconds} points: 3 answers (720 hour windows; ${maxWindows - 100} minute windows twice) in ${elapsed.toFixed(0)} ms; max event-loop delay ${maxDelayMs.toFixed(1)} ms (idle baseline ${(idle.max / 1e6).toFixed(1)} ms)`,
    );
    // Levels cycle 0..99 once per 100 s: an hour holds 36 full cycles → 49.5 × 60 minutes.
    expect(tws.data).toHaveLength(720);
    expect(tws.data.every((r) => r.value === String(49.5 * 60))).toBe(true);
    expect(twa.data).toHaveLength(maxWindows - 100);
    // A minute holds 60 consecutive levels of the cycle, e.g. 40..99 (avg 69.5) or 60..99,0..19.
    const minutes = twa.data.map((_, i) => minuteLevels(week.fromMs + i * 60_000));
    const avg = (l: number[]) =>
      new Big(l.reduce((a, b) => a + b)).div(60).round(9, Big.roundHalfUp).toFixed();
    expect(twa.data.map((r) => r.value)).toEqual(minutes.map(avg));
    // The level carried in from the second before the range counts for the first window's peak.
    const carried = (minutes[0]![0]! + 99) % 100;
    expect(peak.data.map((r) => r.value)).toEqual(
      minutes.map((l, i) => String(Math.max(...l, i === 0 ? carried : 0))),
    );
    // The old code weighed 2.59 M points in each of 720 windows on the event loop (hours of
    // CPU). Bound: well under a second of delay even on a machine whose idle baseline is high.
    expect(maxDelayMs).toBeLessThan(1000);
  }, 120_000);

  it("refuses more windows than an answer may have with a 400-class error naming `window`", async () => {
    const err = await queryUsage(deps(from30), {
      meter: gaugeMeter("peak", type),
      customer,
      fromMs: from30,
      toMs: from30 + seconds * 1000,
      window: "minute",
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageRequestError);
    expect((err as UsageRequestError).field).toBe("window");
    expect((err as Error).message).toContain(String(maxWindows));
  });
});
