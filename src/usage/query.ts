import Big from "big.js";
import { DateTime } from "luxon";
import type { Watermarks } from "../bus/index.js";
import { gaugeAggregations, numericAggregations, timeUnits, type Meter } from "../catalog/index.js";
import {
  queryRows,
  usageAggregate,
  usageGaugeCarryIn,
  usageGaugePoints,
  usageRewriteCount,
  type ClickHouseClient,
  type Collapse,
  type SqlAggregation,
  type UsageFilter,
  type UsageSpec,
} from "../clickhouse/index.js";
import { formatInZone, maxWindows, windowsOf, type Window, type WindowSize } from "./windows.js";

/** Decimal places of time-weighted results (the only values that need a division). */
export const twDecimals = 9;

/**
 * A private Big constructor: a time-weighted result is divided once, and that division rounds
 * half-up to {@link twDecimals} places (no double rounding); nothing here depends on the global
 * Big.DP/Big.RM. Sums and products are exact.
 */
const D = Big();
D.DP = twDecimals;
D.RM = Big.roundHalfUp;

/** Most rows (windows × groups × customers) one usage answer may hold. */
export const maxUsageRows = 100_000;

/** What to measure: one meter, one customer or all, a range, an optional window size and zone. */
export interface UsageRequest {
  meter: Meter;
  /** Omitted: every customer, each row names its customer. */
  customer?: string | undefined;
  fromMs: number;
  toMs: number;
  window?: WindowSize | undefined;
  /** IANA zone the windows follow. @default "UTC" */
  tz?: string | undefined;
  /** Dimensions to split by; each must be one of the meter's `group_by`. @default [] */
  groupBy?: readonly string[] | undefined;
}

/** One value of one window (and group, and customer when all customers were asked for). */
export interface UsageRow {
  from: string;
  to: string;
  /** Exact decimal string; null when the window has no value (min/max/latest/avg/peak of nothing). */
  value: string | null;
  customer?: string;
  groups?: Record<string, string>;
}

/** The answer of the usage API, the stream, the portal and the close job alike (DESIGN invariant 3). */
export interface UsageResult {
  meter: string;
  meter_version: number;
  aggregation: Meter["aggregation"];
  customer: string | null;
  from: string;
  to: string;
  window: WindowSize | null;
  tz: string;
  group_by: string[];
  /** Every event accepted (2xx) before this instant is included. */
  watermark: string;
  /** Events matched by the meter whose value was not a plain decimal (numeric meters), not counted. */
  invalid_values: number;
  data: UsageRow[];
}

/** Bad usage request (unknown group, too many rows): carries the field to blame. */
export class UsageRequestError extends Error {
  override name = "UsageRequestError";
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/** Dependencies of the usage query path. */
export interface UsageDeps {
  clickhouse: ClickHouseClient;
  database: string;
  watermarks: Pick<Watermarks, "current">;
}

interface Cell {
  customer: string | undefined;
  groups: string[];
  /** Window index → value. */
  values: Map<number, string | null>;
}

/**
 * Computes a meter's usage over stored events, at query time (so a new or changed meter applies
 * to history). The watermark is read before ClickHouse is asked, so the answer includes at
 * least everything accepted before it.
 *
 * @example
 * ```ts
 * const r = await queryUsage(deps, { meter, customer: "acme", fromMs, toMs, window: "day", tz: "Europe/Berlin" });
 * r.data; // [{ from: "2026-03-29T00:00:00+01:00", to: "2026-03-30T00:00:00+02:00", value: "42" }, ...]
 * ```
 */
export async function queryUsage(deps: UsageDeps, req: UsageRequest): Promise<UsageResult> {
  const { meter } = req;
  const tz = req.tz ?? "UTC";
  const groupBy = [...(req.groupBy ?? [])];
  for (const g of groupBy) {
    if (!(meter.group_by ?? []).includes(g)) {
      throw new UsageRequestError(
        "group_by",
        `meter ${meter.key} cannot be grouped by ${JSON.stringify(g)}; its dimensions are: ${(meter.group_by ?? []).join(", ") || "(none)"}`,
      );
    }
  }
  const windows = windowsOf(req.fromMs, req.toMs, req.window, tz);
  if (windows.length > maxWindows) {
    throw new UsageRequestError(
      "window",
      `more than ${maxWindows} ${req.window ?? ""} windows in the range; use a larger window or a shorter range`,
    );
  }
  const watermark = await deps.watermarks.current();
  const spec: UsageSpec = {
    eventType: meter.event_type,
    customer: req.customer,
    fromMs: req.fromMs,
    toMs: req.toMs,
    valueProperty: meter.value_property,
    numeric: numericAggregations.has(meter.aggregation),
    filters: (meter.filters ?? []).map(toSqlFilter),
    groupBy,
    bucket: { size: req.window ?? "none", tz },
  };
  const cells = new Map<string, Cell>();
  const cellOf = (customer: string | undefined, groups: string[]) => {
    const k = JSON.stringify([customer ?? null, groups]);
    let c = cells.get(k);
    if (c === undefined) cells.set(k, (c = { customer, groups, values: new Map() }));
    return c;
  };
  let invalid = 0;

  if (gaugeAggregations.has(meter.aggregation)) {
    invalid = await gaugeCells(deps, spec, meter, windows, watermark, cellOf);
  } else {
    const rows = await withRewrites(deps, spec, "range", (collapse) =>
      queryRows<Record<string, string>>(
        deps.clickhouse,
        usageAggregate(deps.database, spec, meter.aggregation as SqlAggregation, maxUsageRows + 1, collapse),
      ),
    );
    if (rows.length > maxUsageRows) tooManyRows();
    for (const r of rows) {
      invalid += Number(r.invalid);
      const cell = cellOf(
        r.u_c,
        groupBy.map((_, i) => r[`u_g${i}`] ?? ""),
      );
      const w = windowIndex(windows, bucketStart(r.bucket ?? "0", spec.bucket.size, tz, req.fromMs));
      if (w < 0) continue;
      // min/max over only invalid values: no value rather than a made-up 0.
      const value = r.valid === "0" && spec.numeric ? null : normalize(meter.aggregation, r.value ?? null);
      cell.values.set(w, value);
    }
  }

  // Without a customer and with no data there is nothing to fill; with one, an empty meter
  // still answers zeros per window (a chart with nothing in it is a real answer).
  if (cells.size === 0 && req.customer !== undefined && groupBy.length === 0) cellOf(req.customer, []);
  const empty = emptyValue(meter.aggregation);
  const ordered = [...cells.values()].sort((a, b) => compareKeys(a, b));
  const data: UsageRow[] = [];
  for (const c of ordered) {
    windows.forEach((w, i) => {
      const row: UsageRow = {
        from: formatInZone(w.fromMs, tz),
        to: formatInZone(w.toMs, tz),
        value: c.values.has(i) ? c.values.get(i)! : empty,
      };
      if (req.customer === undefined && c.customer !== undefined) row.customer = c.customer;
      if (groupBy.length > 0) row.groups = Object.fromEntries(groupBy.map((g, j) => [g, c.groups[j] ?? ""]));
      data.push(row);
    });
    if (data.length > maxUsageRows) tooManyRows();
  }
  return {
    meter: meter.key,
    meter_version: meter.version,
    aggregation: meter.aggregation,
    customer: req.customer ?? null,
    from: formatInZone(req.fromMs, tz),
    to: formatInZone(req.toMs, tz),
    window: req.window ?? null,
    tz,
    group_by: groupBy,
    watermark: new Date(watermark).toISOString(),
    invalid_values: invalid,
    data,
  };
}

/**
 * Runs a query over `events` collapsing exactly the ids the sink recorded as rewritten (none,
 * usually: then it is one plain scan). The records are counted before and after the query
 * (`event_rewrites` only grows): a copy is written only after its record, so if the count did
 * not change, every copy the query could have seen was collapsed. If it changed (a sink is
 * rewriting right now, after a crash), the query runs again.
 */
async function withRewrites<T>(
  deps: UsageDeps,
  spec: UsageSpec,
  range: "range" | "before",
  run: (collapse: Collapse) => Promise<T>,
): Promise<T> {
  const recorded = async () =>
    Number(
      (await queryRows<{ n: string }>(deps.clickhouse, usageRewriteCount(deps.database, spec, range)))[0]
        ?.n ?? 0,
    );
  let before = await recorded();
  for (let attempt = 0; attempt < 5; attempt++) {
    const result = await run({ kind: before === 0 ? "none" : "recorded" });
    const after = await recorded();
    if (after === before) return result;
    before = after;
  }
  // Rewrites kept coming: collapse every id, which needs no records at all.
  return run({ kind: "all" });
}

function tooManyRows(): never {
  throw new UsageRequestError(
    "window",
    `the answer would have more than ${maxUsageRows} rows (windows × groups × customers); use a larger window, a shorter range or fewer dimensions`,
  );
}

function toSqlFilter(f: NonNullable<Meter["filters"]>[number]): UsageFilter {
  if (f.equals !== undefined) return { property: f.property, op: "equals", value: f.equals };
  if (f.not_equals !== undefined) return { property: f.property, op: "not_equals", value: f.not_equals };
  if (f.in !== undefined) return { property: f.property, op: "in", values: f.in };
  if (f.not_in !== undefined) return { property: f.property, op: "not_in", values: f.not_in };
  return { property: f.property, op: "exists", value: f.exists ?? true };
}

/** Value of a window without events: zero for counting aggregations, none for the others. */
function emptyValue(agg: Meter["aggregation"]): string | null {
  return agg === "count" || agg === "sum" || agg === "unique_count" || agg === "time_weighted_sum"
    ? "0"
    : null;
}

/** Decimal128(9) text (`12.500000000`) → shortest exact form (`12.5`). */
function normalize(agg: Meter["aggregation"], v: string | null): string | null {
  if (v === null) return null;
  if (agg === "latest") return v;
  return new D(v).toFixed().replace(/^-0$/, "0");
}

/** Start instant (ms) of the window a ClickHouse bucket key stands for. */
function bucketStart(key: string, size: UsageSpec["bucket"]["size"], tz: string, fromMs: number): number {
  switch (size) {
    case "none":
      return fromMs;
    case "month":
      return DateTime.fromISO(key, { zone: tz }).startOf("day").toMillis();
    default:
      return Number(key) * 1000;
  }
}

/** Index of the window containing `ms` (clamped to the range start), or -1. Binary search. */
function windowIndex(windows: readonly Window[], ms: number): number {
  const t = Math.max(ms, windows[0]?.fromMs ?? ms);
  let lo = 0;
  let hi = windows.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const w = windows[mid]!;
    if (t < w.fromMs) hi = mid - 1;
    else if (t >= w.toMs) lo = mid + 1;
    else return mid;
  }
  return -1;
}

function compareKeys(a: Cell, b: Cell): number {
  const ka = [a.customer ?? "", ...a.groups];
  const kb = [b.customer ?? "", ...b.groups];
  for (let i = 0; i < ka.length; i++) {
    if (ka[i]! < kb[i]!) return -1;
    if (ka[i]! > kb[i]!) return 1;
  }
  return 0;
}

interface GaugePoint {
  ts: number;
  id: string;
  v: Big;
}

/**
 * Gauges: the level set by each event holds until the next event of the same customer and
 * group; the level at the range start is carried in from the newest earlier event. Levels hold
 * up to `min(to, max(watermark, last point))`: beyond what is known, nothing is assumed.
 */
async function gaugeCells(
  deps: UsageDeps,
  spec: UsageSpec,
  meter: Meter,
  windows: readonly Window[],
  watermark: number,
  cellOf: (customer: string | undefined, groups: string[]) => Cell,
): Promise<number> {
  const [pointRows, carryRows] = await Promise.all([
    withRewrites(deps, spec, "range", (collapse) =>
      queryRows<Record<string, unknown>>(
        deps.clickhouse,
        usageGaugePoints(deps.database, spec, maxUsageRows + 1, collapse),
      ),
    ),
    withRewrites(deps, spec, "before", (collapse) =>
      queryRows<Record<string, unknown>>(
        deps.clickhouse,
        usageGaugeCarryIn(deps.database, spec, maxUsageRows + 1, collapse),
      ),
    ),
  ]);
  if (pointRows.length > maxUsageRows || carryRows.length > maxUsageRows) tooManyRows();
  const text = (v: unknown) => (typeof v === "string" ? v : "");
  const keyOf = (r: Record<string, unknown>) =>
    JSON.stringify([r.u_c ?? null, spec.groupBy.map((_, i) => text(r[`u_g${i}`]))]);
  const series = new Map<string, { customer: string | undefined; groups: string[]; points: GaugePoint[] }>();
  const seriesOf = (r: Record<string, unknown>) => {
    const k = keyOf(r);
    let s = series.get(k);
    if (s === undefined) {
      s = {
        customer: r.u_c === undefined ? spec.customer : text(r.u_c),
        groups: spec.groupBy.map((_, i) => text(r[`u_g${i}`])),
        points: [],
      };
      series.set(k, s);
    }
    return s;
  };
  let invalid = 0;
  for (const r of pointRows) {
    invalid += Number(r.invalid);
    const ts = r.ts as string[];
    if (ts.length === 0) continue;
    const ids = r.ids as string[];
    const vs = r.vs as string[];
    const s = seriesOf(r);
    ts.forEach((t, i) => s.points.push({ ts: Number(t), id: ids[i]!, v: new D(vs[i]!) }));
  }
  for (const r of carryRows) {
    if (Number(r.n) === 0) continue;
    // The carried level starts at the range start: it is the level there.
    seriesOf(r).points.push({ ts: spec.fromMs, id: "", v: new D(r.v as string) });
  }
  const unitMs = timeUnits[meter.time_unit ?? "hour"];
  for (const s of series.values()) {
    // Carry-in first at fromMs (id ""), then by time, ties by id: the same order as `latest`.
    s.points.sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const last = s.points[s.points.length - 1]!;
    const horizon = Math.min(spec.toMs, Math.max(watermark, last.ts + 1));
    const cell = cellOf(s.customer, s.groups);
    windows.forEach((w, wi) => {
      let weighted = new D(0);
      let covered = 0;
      let peak: Big | null = null;
      s.points.forEach((p, i) => {
        const segEnd = Math.min(s.points[i + 1]?.ts ?? horizon, horizon);
        const a = Math.max(p.ts, w.fromMs);
        const b = Math.min(segEnd, w.toMs);
        // A point inside the window counts for the peak even if the next one follows at once.
        if (p.ts >= w.fromMs && p.ts < w.toMs && (peak === null || p.v.gt(peak))) peak = p.v;
        if (b <= a) return;
        if (peak === null || p.v.gt(peak)) peak = p.v;
        weighted = weighted.plus(p.v.times(b - a));
        covered += b - a;
      });
      let value: string | null;
      switch (meter.aggregation) {
        case "time_weighted_sum":
          value = covered === 0 ? "0" : fixed(weighted.div(unitMs));
          break;
        case "time_weighted_avg":
          value = covered === 0 ? null : fixed(weighted.div(covered));
          break;
        default:
          value = peak === null ? null : (peak as Big).toFixed();
      }
      cell.values.set(wi, value);
    });
  }
  return invalid;
}

/** A quotient already rounded by the division, without trailing zeros or exponent. */
function fixed(v: Big): string {
  return v.toFixed().replace(/^-0$/, "0");
}
