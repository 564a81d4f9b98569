import Big from "big.js";
import { DateTime } from "luxon";
import type { Watermarks } from "../bus/index.js";
import { gaugeAggregations, numericAggregations, timeUnits, type Meter } from "../catalog/index.js";
import {
  queryRows,
  usageAggregate,
  usageEvidence,
  usageEventPage,
  usageGaugeBuckets,
  usageGaugeCarryIn,
  usageRewriteCount,
  usageRollupAggregate,
  rollupBucketMs,
  rollupReceiveMs,
  rollupReadPlan,
  rollupTailProbe,
  usageTotals,
  usageTotalsRewriteCount,
  type ClickHouseClient,
  type Collapse,
  type RollupScope,
  type SqlAggregation,
  type UsageFilter,
  type UsageSpec,
} from "../clickhouse/index.js";
import { digestHex } from "./evidence.js";
import { chainOf, type FillUnit } from "./rollup-chain.js";
import {
  formatInZone,
  maxWindows,
  windowsOf,
  zoneFormatter,
  type Window,
  type WindowSize,
} from "./windows.js";

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
  /** With `customer` omitted: only these customers (the close asks for one batch at a time). */
  customers?: readonly string[] | undefined;
  /**
   * Only events received at or before this instant: the close's bitemporal cut, so re-running
   * it reads the same events whatever arrived since. @default every stored event
   */
  receivedUpToMs?: number | undefined;
  /** Most rows of the answer. @default maxUsageRows */
  maxRows?: number | undefined;
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
  /**
   * `off`: never read the rollup (every answer from raw events; the differential tests compare
   * the two). @default "use": closed receive hours from the rollup where it is built
   */
  rollups?: "use" | "off" | undefined;
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
      `the range has more than ${maxWindows} ${req.window ?? ""} windows (at most ${maxWindows} per answer); use a larger window or a shorter range`,
    );
  }
  const watermark = await deps.watermarks.current();
  const spec = usageSpec(req, groupBy, { size: req.window ?? "none", tz });

  const limit = req.maxRows ?? maxUsageRows;
  const cells = new Map<string, Cell>();
  const cellOf = (customer: string | undefined, groups: string[]) => {
    const k = JSON.stringify([customer ?? null, groups]);
    let c = cells.get(k);
    if (c === undefined) cells.set(k, (c = { customer, groups, values: new Map() }));
    return c;
  };
  let invalid = 0;

  if (gaugeAggregations.has(meter.aggregation)) {
    invalid = await gaugeCells(deps, spec, meter, windows, watermark, cellOf, limit);
  } else {
    const agg = meter.aggregation as SqlAggregation;
    const plan = await rollupScopeOf(deps, req, groupBy, windows);
    const rollup = plan.scope;
    const rows =
      rollup === null
        ? await withRewrites(
            deps,
            spec,
            "range",
            (collapse) =>
              queryRows<Record<string, string>>(
                deps.clickhouse,
                usageAggregate(deps.database, spec, agg, limit + 1, collapse),
              ),
            plan.recordsBefore,
          )
        : await rollupRows(deps, spec, { ...plan, scope: rollup }, (collapse) =>
            usageRollupAggregate(
              deps.database,
              { ...spec, receivedFromMs: rollup.horizonMs },
              agg,
              rollup,
              limit + 1,
              collapse,
            ),
          );
    if (rows.length > limit) tooManyRows(limit);
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
  // Each boundary formatted once, not once per row (rows = windows × groups × customers).
  const format = zoneFormatter(tz, req.fromMs, req.toMs);
  const bounds = windows.map((w) => format(w.fromMs));
  bounds.push(format(windows[windows.length - 1]?.toMs ?? req.toMs));
  const data: UsageRow[] = [];
  for (const c of ordered) {
    windows.forEach((_, i) => {
      const row: UsageRow = {
        from: bounds[i]!,
        to: bounds[i + 1]!,
        value: c.values.has(i) ? c.values.get(i)! : empty,
      };
      if (req.customer === undefined && c.customer !== undefined) row.customer = c.customer;
      if (groupBy.length > 0) row.groups = Object.fromEntries(groupBy.map((g, j) => [g, c.groups[j] ?? ""]));
      data.push(row);
    });
    if (data.length > limit) tooManyRows(limit);
    await yieldEvery(windows.length);
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

const modulo = (x: number, m: number) => ((x % m) + m) % m;

/**
 * Whether a request can be answered from the meter version's rollup, and which part of it:
 * the receive hours below the chain's horizon (and below the request's receive cut, rounded down
 * to an hour), with raw events for the rest. Only for aggregations computed in ClickHouse
 * (gauges always read their points), windows of an hour or more whose every boundary falls on a
 * rollup bucket (15 minutes: true of every zone's hours, days and months today), and a range
 * on bucket boundaries; anything else reads raw events, which gives the same answer.
 */
async function rollupScopeOf(
  deps: UsageDeps,
  req: UsageRequest,
  groupBy: readonly string[],
  windows: readonly Window[],
): Promise<RollupPlan> {
  const { meter } = req;
  const raw = { scope: null, recordsBefore: undefined };
  if (deps.rollups === "off" || gaugeAggregations.has(meter.aggregation)) return raw;
  if (req.window === "minute") return raw;
  if (modulo(req.fromMs, rollupBucketMs) !== 0 || modulo(req.toMs, rollupBucketMs) !== 0) return raw;
  if (windows.some((w) => modulo(w.fromMs, rollupBucketMs) !== 0)) return raw;
  let cap: number | undefined;
  if (req.receivedUpToMs !== undefined) {
    const cut = req.receivedUpToMs + 1;
    cap = cut - modulo(cut, rollupReceiveMs);
  }
  // One round trip: the units (-> the chain), the tail probe at the newest unit's end and the
  // rewrite records in scope (the read's "before" count, for whichever path it takes).
  const probeSpec = usageSpec(req, [], { size: "none", tz: "UTC" });
  const rows = await queryRows<{ k: string; a: string; b: string; c: string }>(
    deps.clickhouse,
    rollupReadPlan(deps.database, probeSpec, meter, cap),
  );
  const units: FillUnit[] = [];
  for (const r of rows) if (r.k === "u") units.push({ fromMs: Number(r.a), toMs: Number(r.b), token: r.c });
  const p = rows.find((r) => r.k === "p");
  const records = rows.find((r) => r.k === "r");
  const recordsBefore = records === undefined ? undefined : Number(records.a);
  const chain = chainOf(units);
  if (chain === null) return { scope: null, recordsBefore };
  const horizonMs = cap === undefined ? chain.horizonMs : Math.min(chain.horizonMs, cap);
  if (horizonMs <= 0) return { scope: null, recordsBefore };
  const newest = Math.max(...units.map((u) => u.toMs));
  let probe = p === undefined ? undefined : { n: p.a, lo: p.b, hi: p.c };
  if (horizonMs !== (cap === undefined ? newest : Math.min(newest, cap))) {
    // The chain ends before the newest unit (a gap or a racing filler): probe at its own end.
    [probe] = await queryRows<{ n: string; lo: string; hi: string }>(
      deps.clickhouse,
      rollupTailProbe(deps.database, probeSpec, horizonMs),
    );
  }
  // Which event times the open tail holds; none (a closed period: the usual read of a past
  // month) = the statement skips the raw events entirely.
  const tail =
    probe === undefined || probe.n === "0" ? null : { fromMs: Number(probe.lo), toMs: Number(probe.hi) + 1 };
  // The tail's "before" count: the listed record times inside it (all of them listed, or unknown).
  let tailRecordsBefore: number | undefined;
  if (tail !== null && records !== undefined && recordsBefore !== undefined) {
    const times = JSON.parse(records.b) as number[];
    if (times.length === recordsBefore)
      tailRecordsBefore = times.filter((t) => t >= tail.fromMs && t < tail.toMs).length;
  }
  const declared = meter.group_by ?? [];
  return {
    scope: {
      meter: meter.key,
      version: meter.version,
      horizonMs,
      excludedTokens: chain.excludedTokens,
      groupColumns: groupBy.map((g) => declared.indexOf(g)),
      tail,
    },
    recordsBefore: tailRecordsBefore,
  };
}

/**
 * What {@link rollupScopeOf} found: the rollup part of the read (null = raw path), and the
 * rewrite records counted in the same round trip, which the read uses as its "before" count:
 * on the raw path those of the request's scope, on the rollup path those of the open tail's
 * event times (`scope.tail`). Undefined = not counted (the read counts itself).
 */
interface RollupPlan {
  scope: RollupScope | null;
  recordsBefore: number | undefined;
}

/**
 * Runs a rollup read. Without an open tail the statement reads no events, so no rewrite can
 * matter: one statement. With one, the rewrite records counted with the plan are the "before"
 * count, and one count after the read checks that none appeared meanwhile ({@link withRewrites}).
 */
async function rollupRows(
  deps: UsageDeps,
  spec: UsageSpec,
  plan: RollupPlan & { scope: RollupScope },
  statement: (collapse: Collapse) => string,
): Promise<Record<string, string>[]> {
  const run = (collapse: Collapse) => queryRows<Record<string, string>>(deps.clickhouse, statement(collapse));
  const tail = plan.scope.tail;
  if (tail === null) return run({ kind: "none" });
  // Counted over the tail's event times only (rows of an id share their time, so a copy outside
  // them is never read): usually none there, and the tail is a plain scan.
  const scope = tail === undefined ? spec : { ...spec, fromMs: tail.fromMs, toMs: tail.toMs };
  return withRewrites(deps, scope, "range", run, plan.recordsBefore);
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
  /** The records already counted in this scope (the plan's count), saving one round trip. */
  recordsBefore?: number,
): Promise<T> {
  return withRewritesCounted(deps, usageRewriteCount(deps.database, spec, range), run, recordsBefore);
}

/** {@link withRewrites} with the count of records in scope given as its SQL. */
export async function withRewritesCounted<T>(
  deps: UsageDeps,
  countSql: string,
  run: (collapse: Collapse) => Promise<T>,
  recordsBefore?: number,
): Promise<T> {
  const recorded = async () => Number((await queryRows<{ n: string }>(deps.clickhouse, countSql))[0]?.n ?? 0);
  let before = recordsBefore ?? (await recorded());
  for (let attempt = 0; attempt < 5; attempt++) {
    const result = await run({ kind: before === 0 ? "none" : "recorded" });
    const after = await recorded();
    if (after === before) return result;
    before = after;
  }
  // Rewrites kept coming: collapse every id, which needs no records at all.
  return run({ kind: "all" });
}

/**
 * NOTE: a large answer (windows × groups × customers) is built series by series; after about
 * 5,000 rows' worth of work the event loop gets a turn, so other requests (ingest, other
 * readers) run in between instead of waiting for the whole answer.
 */
async function yieldEvery(work: number): Promise<void> {
  yieldBudget -= work;
  if (yieldBudget > 0) return;
  yieldBudget = 5_000;
  await new Promise((r) => setImmediate(r));
}
let yieldBudget = 5_000;

function tooManyRows(limit: number): never {
  throw new UsageRequestError(
    "window",
    `the answer would have more than ${limit} rows (windows × groups × customers); use a larger window, a shorter range or fewer dimensions`,
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

/** One bucket of a gauge series as ClickHouse summarised it (see `usageGaugeBuckets`). */
export interface GaugeBucket {
  /** First and last instant with a value in the bucket. */
  t1: number;
  tk: number;
  /** The level after the bucket (its last value), in units of 1e-9. */
  lk: bigint;
  /** The highest value in the bucket, in units of 1e-9. */
  mx: bigint;
  /** Exact Σ level × ms between t1 and tk, in units of 1e-9. */
  inner: bigint;
}

/** Per window: Σ level × ms and the highest level held or set (units of 1e-9), ms covered. */
export interface GaugeWindow {
  weighted: bigint;
  covered: number;
  peak: bigint | null;
}

/** Gauge values are exact decimals with at most 9 places: integers of 1e-9 (bigint, fast). */
const scale = 10n ** BigInt(twDecimals);

/** A plain decimal (`-12.5`, `12.500000000`) as an integer of 1e-9. */
export function toNano(v: string): bigint {
  const m = /^(-?)(\d+)(?:\.(\d{1,9}))?$/.exec(v);
  if (m === null) throw new Error(`not a plain decimal: ${JSON.stringify(v)}`);
  const n = BigInt(m[2]!) * scale + BigInt((m[3] ?? "").padEnd(twDecimals, "0"));
  return m[1] === "-" ? -n : n;
}

/** An integer of 1e-9 as the shortest exact decimal (`12.5`, `0`; never `-0`). */
export function fromNano(n: bigint): string {
  const neg = n < 0n;
  const a = neg ? -n : n;
  const frac = (a % scale).toString().padStart(twDecimals, "0").replace(/0+$/, "");
  const text = `${a / scale}${frac === "" ? "" : `.${frac}`}`;
  return neg && a !== 0n ? `-${text}` : text;
}

/** `n / d` rounded half away from zero (big.js `roundHalfUp`), for d > 0. */
function divRound(n: bigint, d: bigint): bigint {
  const a = n < 0n ? -n : n;
  let q = a / d;
  if ((a % d) * 2n >= d) q += 1n;
  return n < 0n ? -q : q;
}

/**
 * Gauge semantics in one pass over a series' buckets and the windows (O(windows + buckets)):
 * the level set by a value holds until the next value or the `horizon`; a carried-in level
 * (`carry`, the newest value before the range) holds from the first window's start and counts
 * for its peak even if a value at the same instant replaces it at once. A level counts for a
 * window's peak where it is held there for some time; a value counts where it is set.
 * Buckets must be in time order and each must lie inside one window.
 */
export function sweepGauge(
  windows: readonly Window[],
  buckets: readonly GaugeBucket[],
  carry: bigint | null,
  horizon: number,
): GaugeWindow[] {
  const out: GaugeWindow[] = windows.map(() => ({ weighted: 0n, covered: 0, peak: null }));
  if (windows.length === 0) return out;
  let wi = 0;
  let level: bigint | null = carry;
  let cursor = windows[0]!.fromMs;
  const raise = (w: GaugeWindow, v: bigint) => {
    if (w.peak === null || v > w.peak) w.peak = v;
  };
  if (carry !== null) raise(out[0]!, carry);
  /** Holds the current level from `cursor` to `t` (≤ horizon), window by window. */
  const holdUntil = (t: number) => {
    while (wi < windows.length) {
      const w = windows[wi]!;
      const end = Math.min(t, w.toMs);
      if (level !== null && end > cursor) {
        const o = out[wi]!;
        o.weighted += level * BigInt(end - cursor);
        o.covered += end - cursor;
        raise(o, level);
      }
      cursor = Math.max(cursor, end);
      if (t < w.toMs) return;
      wi++;
    }
  };
  for (const b of buckets) {
    holdUntil(b.t1);
    const w = windows[wi];
    if (w === undefined || b.t1 < w.fromMs || b.tk >= w.toMs) {
      throw new Error(`gauge bucket [${b.t1}, ${b.tk}] does not lie inside one window`);
    }
    const o = out[wi]!;
    o.weighted += b.inner;
    o.covered += b.tk - b.t1;
    raise(o, b.mx);
    cursor = b.tk;
    level = b.lk;
  }
  holdUntil(horizon);
  return out;
}

/**
 * One window's value: time-weighted sum per `unitMs` or average, divided once and rounded
 * half-up to {@link twDecimals} places, or the peak. Null where the aggregation has no value.
 */
export function gaugeValue(
  agg: "time_weighted_sum" | "time_weighted_avg" | "peak",
  w: GaugeWindow,
  unitMs: number,
): string | null {
  switch (agg) {
    case "time_weighted_sum":
      return w.covered === 0 ? "0" : fromNano(divRound(w.weighted, BigInt(unitMs)));
    case "time_weighted_avg":
      return w.covered === 0 ? null : fromNano(divRound(w.weighted, BigInt(w.covered)));
    case "peak":
      return w.peak === null ? null : fromNano(w.peak);
  }
}

/**
 * The bucket width for a gauge query: the largest divisor of a day that every window boundary
 * inside the range is a multiple of (after `shift`, which makes times non-negative), so each
 * bucket lies inside one window. A minute for minute windows, an hour or a day for the others
 * (a half hour, say, for Kolkata's hours); the widest a day, which keeps each bucket's exact
 * Decimal128 sum from overflowing.
 */
export function gaugeBucketing(
  windows: readonly Window[],
  fromMs: number,
): { bucketMs: number; shiftMs: number } {
  const day = 86_400_000;
  const shiftMs = fromMs < 0 ? Math.ceil(-fromMs / day) * day : 0;
  let g = day;
  for (let i = 1; i < windows.length && g > 1; i++) g = gcd(g, windows[i]!.fromMs + shiftMs);
  return { bucketMs: g, shiftMs };
}

function gcd(a: number, b: number): number {
  a = Math.abs(a);
  b = Math.abs(b);
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/**
 * Gauges: the level set by each event holds until the next event of the same customer and
 * group; the level at the range start is carried in from the newest earlier event. Levels hold
 * up to `min(to, max(watermark, last point))`: beyond what is known, nothing is assumed.
 * ClickHouse summarises the points per bucket nested in the windows, so the edge's work is
 * linear in windows and buckets, never in points (a per-second gauge over a month is 2.6
 * million points and one row per minute, hour or day).
 */
async function gaugeCells(
  deps: UsageDeps,
  spec: UsageSpec,
  meter: Meter,
  windows: readonly Window[],
  watermark: number,
  cellOf: (customer: string | undefined, groups: string[]) => Cell,
  limit: number,
): Promise<number> {
  const { bucketMs, shiftMs } = gaugeBucketing(windows, spec.fromMs);
  const [bucketRows, carryRows] = await Promise.all([
    withRewrites(deps, spec, "range", (collapse) =>
      queryRows<Record<string, unknown>>(
        deps.clickhouse,
        usageGaugeBuckets(deps.database, spec, bucketMs, shiftMs, limit + 1, collapse),
      ),
    ),
    withRewrites(deps, spec, "before", (collapse) =>
      queryRows<Record<string, unknown>>(
        deps.clickhouse,
        usageGaugeCarryIn(deps.database, spec, limit + 1, collapse),
      ),
    ),
  ]);
  if (bucketRows.length > limit || carryRows.length > limit) tooManyRows(limit);
  const text = (v: unknown) => (typeof v === "string" ? v : "");
  const keyOf = (r: Record<string, unknown>) =>
    JSON.stringify([r.u_c ?? null, spec.groupBy.map((_, i) => text(r[`u_g${i}`]))]);
  interface Series {
    customer: string | undefined;
    groups: string[];
    buckets: GaugeBucket[];
    carry: bigint | null;
  }
  const series = new Map<string, Series>();
  const seriesOf = (r: Record<string, unknown>) => {
    const k = keyOf(r);
    let s = series.get(k);
    if (s === undefined) {
      s = {
        customer: r.u_c === undefined ? spec.customer : text(r.u_c),
        groups: spec.groupBy.map((_, i) => text(r[`u_g${i}`])),
        buckets: [],
        carry: null,
      };
      series.set(k, s);
    }
    return s;
  };
  let invalid = 0;
  // Rows come ordered by series and bucket: each series' buckets are in time order.
  for (const r of bucketRows) {
    invalid += Number(r.invalid);
    if (Number(r.valid) === 0) continue;
    seriesOf(r).buckets.push({
      t1: Number(r.t1),
      tk: Number(r.tk),
      lk: toNano(text(r.lk)),
      mx: toNano(text(r.mx)),
      inner: BigInt(text(r.inner_hi)) * 10n ** 18n * scale + toNano(text(r.inner_lo)),
    });
  }
  for (const r of carryRows) {
    if (Number(r.n) === 0) continue;
    seriesOf(r).carry = toNano(text(r.v));
  }
  const unitMs = timeUnits[meter.time_unit ?? "hour"];
  await yieldEvery(bucketRows.length);
  for (const s of series.values()) {
    const last = s.buckets.length > 0 ? s.buckets[s.buckets.length - 1]!.tk : spec.fromMs;
    const horizon = Math.min(spec.toMs, Math.max(watermark, last + 1));
    const cell = cellOf(s.customer, s.groups);
    const agg = meter.aggregation as "time_weighted_sum" | "time_weighted_avg" | "peak";
    sweepGauge(windows, s.buckets, s.carry, horizon).forEach((w, wi) =>
      cell.values.set(wi, gaugeValue(agg, w, unitMs)),
    );
    await yieldEvery(windows.length);
  }
  return invalid;
}

/** The evidence behind one customer's number (see {@link queryEvidence}). */
export interface UsageEvidence {
  /** Distinct events the meter matched. */
  eventCount: number;
  /** `idDigest` of their ids (32 hex characters). */
  idDigest: string;
}

/**
 * Per customer, the events behind {@link queryUsage}'s number for the same request: how many,
 * and an order-independent digest of their ids, computed in ClickHouse over exactly the rows the
 * number was computed from (the same scope, filters, receive cut and collapse of rewritten ids).
 * For gauges these are the events inside the range (the level carried in from before is not).
 */
export async function queryEvidence(deps: UsageDeps, req: UsageRequest): Promise<Map<string, UsageEvidence>> {
  const spec = evidenceSpec(req);
  const rows = await withRewrites(deps, spec, "range", (collapse) =>
    queryRows<{ u_c: string; n: string; d1: string; d2: string }>(
      deps.clickhouse,
      usageEvidence(deps.database, spec, collapse),
    ),
  );
  return new Map(
    rows.map((r) => [r.u_c, { eventCount: Number(r.n), idDigest: digestHex(BigInt(r.d1), BigInt(r.d2)) }]),
  );
}

/** One meter's total for one customer, with its evidence (see {@link queryTotals}). */
export interface UsageTotal extends UsageEvidence {
  /** What {@link queryUsage} answers for the customer over the range with no window. */
  value: string | null;
}

/** Several meters over one scope: what {@link queryTotals} answers. */
export interface TotalsRequest {
  /** Meters with an aggregation computed in ClickHouse (not the gauges). */
  meters: readonly Meter[];
  fromMs: number;
  toMs: number;
  /** Only these customers (every customer when omitted). */
  customers?: readonly string[] | undefined;
  /** Only events received at or before this instant. */
  receivedUpToMs?: number | undefined;
}

/**
 * Per meter, per customer: the total {@link queryUsage} gives for the range (no window, no
 * groups) and the {@link queryEvidence} behind it, for several meters in ONE scan of the events
 * (the close asks this for every metered price of every subscription of a period: one scan per
 * meter and another per evidence would read 100M events ten times for five meters). The same
 * translation of a meter (`usageSpec`), the same collapse of rewritten ids and the same value
 * rules; `test/usage-totals.test.ts` checks every answer against queryUsage and queryEvidence.
 * Customers absent from a meter's map had no matching event (queryUsage's empty value applies).
 * @throws UsageRequestError for a gauge meter (time-weighted, peak: use queryUsage).
 */
export async function queryTotals(
  deps: UsageDeps,
  req: TotalsRequest,
): Promise<{ watermark: string; totals: Map<string, UsageTotal>[] }> {
  const specs = req.meters.map((meter) => {
    if (gaugeAggregations.has(meter.aggregation)) {
      throw new UsageRequestError("meter", `meter ${meter.key} is a gauge; totals take SQL aggregations`);
    }
    return {
      spec: usageSpec({ ...req, meter }, [], { size: "none", tz: "UTC" }),
      agg: meter.aggregation as SqlAggregation,
    };
  });
  const watermark = await deps.watermarks.current();
  const totals = req.meters.map(() => new Map<string, UsageTotal>());
  if (specs.length === 0) return { watermark: new Date(watermark).toISOString(), totals };
  // Meters with a built rollup: one small read each (rollup + open tail) with the same value
  // rules; the others share one scan of the events as before.
  const raw: number[] = [];
  for (const [i, { spec, agg }] of specs.entries()) {
    const meter = req.meters[i]!;
    const windows = windowsOf(req.fromMs, req.toMs, undefined, "UTC");
    const plan = await rollupScopeOf(deps, { ...req, meter }, [], windows);
    const rollup = plan.scope;
    if (rollup === null) {
      raw.push(i);
      continue;
    }
    const rows = await rollupRows(deps, spec, { ...plan, scope: rollup }, (collapse) =>
      usageRollupAggregate(
        deps.database,
        { ...spec, receivedFromMs: rollup.horizonMs },
        agg,
        rollup,
        maxUsageRows * 100,
        collapse,
        true,
      ),
    );
    for (const r of rows) {
      const value = r.valid === "0" && spec.numeric ? null : normalize(agg, r.value ?? null);
      totals[i]!.set(r.u_c ?? "", {
        value,
        eventCount: Number(r.ev_n),
        idDigest: digestHex(BigInt(r.ev_d1 ?? "0"), BigInt(r.ev_d2 ?? "0")),
      });
    }
    await yieldEvery(rows.length);
  }
  if (raw.length === 0) return { watermark: new Date(watermark).toISOString(), totals };
  const rawSpecs = raw.map((i) => specs[i]!);
  const rows = await withRewritesCounted(deps, usageTotalsRewriteCount(deps.database, rawSpecs), (collapse) =>
    queryRows<Record<string, string>>(deps.clickhouse, usageTotals(deps.database, rawSpecs, collapse)),
  );
  for (const r of rows) {
    const customer = r.u_c ?? "";
    rawSpecs.forEach(({ spec, agg }, j) => {
      const i = raw[j]!;
      const n = Number(r[`n${j}`]);
      if (n === 0) return;
      const value = r[`ok${j}`] === "0" && spec.numeric ? null : normalize(agg, r[`v${j}`] ?? null);
      totals[i]!.set(customer, {
        value,
        eventCount: n,
        idDigest: digestHex(BigInt(r[`d1${j}`] ?? "0"), BigInt(r[`d2${j}`] ?? "0")),
      });
    });
    await yieldEvery(rawSpecs.length);
  }
  return { watermark: new Date(watermark).toISOString(), totals };
}

/** The value {@link queryUsage} gives a customer without events for an aggregation. */
export function emptyUsageValue(agg: Meter["aggregation"]): string | null {
  return emptyValue(agg);
}

/** One event behind a usage number. */
export interface EvidenceEvent {
  id: string;
  time: string;
  /** The meter's value property as stored ("" for `count`). */
  value: string;
}

/**
 * A page of the events behind {@link queryUsage}'s number for one customer (ordered by id, the
 * page after `afterId`): the list an auditor recomputes a line's `id_digest` from.
 */
export async function listEvidence(
  deps: UsageDeps,
  req: UsageRequest & { customer: string },
  afterId: string | undefined,
  limit: number,
): Promise<EvidenceEvent[]> {
  const spec = evidenceSpec(req);
  const rows = await withRewrites(deps, spec, "range", (collapse) =>
    queryRows<{ u_id: string; u_ts: string; u_v: string }>(
      deps.clickhouse,
      usageEventPage(deps.database, spec, afterId, limit, collapse),
    ),
  );
  return rows.map((r) => ({ id: r.u_id, time: new Date(Number(r.u_ts)).toISOString(), value: r.u_v }));
}

function evidenceSpec(req: UsageRequest): UsageSpec {
  return usageSpec(req, [], { size: "none", tz: "UTC" });
}

/** The SQL-level spec of a request: the one translation of a meter into what events count. */
export function usageSpec(req: UsageRequest, groupBy: string[], bucket: UsageSpec["bucket"]): UsageSpec {
  const { meter } = req;
  return {
    eventType: meter.event_type,
    customer: req.customer,
    fromMs: req.fromMs,
    toMs: req.toMs,
    valueProperty: meter.value_property,
    numeric: numericAggregations.has(meter.aggregation),
    filters: (meter.filters ?? []).map(toSqlFilter),
    groupBy,
    bucket,
    customers: req.customer === undefined ? req.customers : undefined,
    receivedUpToMs: req.receivedUpToMs,
  };
}
