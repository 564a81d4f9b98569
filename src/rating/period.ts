import { addIntervals, toEpochMs, toIso } from "./calendar.js";
import type { Timestamp } from "./calendar.js";
import { RatingInputError } from "./errors.js";
import type { RatingIssue } from "./errors.js";
import type { Interval } from "./plan-schema.js";
import type { LinePeriod } from "./types.js";

/**
 * A billing period `[start, end)`, parsed and validated once. Rating accepts `{ start, end }`
 * timestamps or this; pass a BillingPeriod when rating many subscriptions over the same period
 * (the close job, the bench) so the timestamps are not parsed again for each one.
 */
export class BillingPeriod {
  /** Canonical ISO 8601 UTC, e.g. `2026-11-01T00:00:00.000Z`. */
  readonly start: string;
  readonly end: string;
  /** Epoch milliseconds. */
  readonly startMs: number;
  readonly endMs: number;
  /** The frozen `{ start, end }` every full-period line shares. */
  readonly line: LinePeriod;
  readonly #steps = new Map<string, number>();
  /** The last step asked for: callers rating many subscriptions ask for the same one every time. */
  #last: { readonly interval: Interval; readonly count: number; readonly ms: number } | null = null;

  /** @internal use {@link billingPeriod} or {@link resolvePeriod}. */
  constructor(startMs: number, endMs: number) {
    this.startMs = startMs;
    this.endMs = endMs;
    this.start = toIso(startMs);
    this.end = toIso(endMs);
    this.line = Object.freeze({ start: this.start, end: this.end });
  }

  /** `start` plus `count` intervals (memoized per interval: many plans share one period). */
  stepFromStart(interval: Interval, count: number): number {
    const last = this.#last;
    if (last !== null && last.interval === interval && last.count === count) return last.ms;
    const key = `${interval}:${count}`;
    let ms = this.#steps.get(key);
    if (ms === undefined) {
      ms = addIntervals(this.startMs, interval, count);
      this.#steps.set(key, ms);
    }
    this.#last = { interval, count, ms };
    return ms;
  }
}

const TIMESTAMP_MESSAGE = "must be an ISO 8601 timestamp with a time zone, e.g. 2026-11-01T00:00:00Z";

/**
 * Parses a billing period once.
 * @throws RatingInputError (paths `period.start`, `period.end`) for a bad timestamp or `end <= start`.
 * @example
 * ```ts
 * const period = billingPeriod("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z");
 * const invoices = customers.map((c) => rate({ plan, period, usage: c.usage }));
 * ```
 */
export function billingPeriod(start: Timestamp, end: Timestamp): BillingPeriod {
  const issues: RatingIssue[] = [];
  const startMs = toEpochMs(start);
  const endMs = toEpochMs(end);
  if (startMs === undefined) issues.push({ path: "period.start", message: TIMESTAMP_MESSAGE });
  if (endMs === undefined) issues.push({ path: "period.end", message: TIMESTAMP_MESSAGE });
  if (startMs !== undefined && endMs !== undefined && endMs <= startMs) {
    issues.push({ path: "period.end", message: "must be after period.start" });
  }
  if (issues.length > 0) throw new RatingInputError(issues);
  return new BillingPeriod(startMs!, endMs!);
}

/** The interval of a plan: validated (`Plan`) or compiled (`CompiledPlan`). */
interface HasInterval {
  readonly interval: Interval;
  readonly interval_count?: string;
  readonly intervalCount?: number;
}

/** Start of the calendar unit (UTC) holding `ms`: a day, an ISO week (Monday), a month or a year. */
function unitStart(ms: number, interval: Interval): number {
  const d = new Date(ms);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  switch (interval) {
    case "year":
      return Date.UTC(y, 0, 1);
    case "month":
      return Date.UTC(y, m, 1);
    case "week":
      return Date.UTC(y, m, d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
    case "day":
      return Date.UTC(y, m, d.getUTCDate());
  }
}

/**
 * Completes a billing period from what is known, for callers such as the CLI and the live preview:
 * given `start` and/or `end`, the missing bound is one plan interval away; given neither, the period
 * is the calendar-aligned one (UTC) that holds `now` — the clock is an explicit input, never read here.
 *
 * @throws RatingInputError for a timestamp that is not ISO 8601 with a zone (path `period.start`/`period.end`).
 * @example
 * ```ts
 * resolvePeriod(plan, { now: new Date() });                     // this month, for a monthly plan
 * resolvePeriod(plan, { start: "2026-11-01T00:00:00Z", now });  // 2026-11-01T00:00:00.000Z – 2026-12-01T00:00:00.000Z
 * ```
 */
export function resolvePeriod(
  plan: HasInterval,
  bounds: { readonly start?: Timestamp; readonly end?: Timestamp; readonly now: Timestamp },
): BillingPeriod {
  const count = plan.intervalCount ?? Number(plan.interval_count ?? "1");
  const issues: RatingIssue[] = [];
  const parse = (value: Timestamp | undefined, path: string): number | undefined => {
    if (value === undefined) return undefined;
    const ms = toEpochMs(value);
    if (ms === undefined) {
      issues.push({
        path,
        message: "must be an ISO 8601 timestamp with a time zone, e.g. 2026-11-01T00:00:00Z",
      });
    }
    return ms;
  };
  let start = parse(bounds.start, "period.start");
  let end = parse(bounds.end, "period.end");
  const now = parse(bounds.now, "now");
  if (issues.length > 0) throw new RatingInputError(issues);
  if (start === undefined && end === undefined) start = unitStart(now!, plan.interval);
  if (start !== undefined && end === undefined) end = addIntervals(start, plan.interval, count);
  if (start === undefined && end !== undefined) start = addIntervals(end, plan.interval, -count);
  if (end! <= start!)
    throw new RatingInputError([{ path: "period.end", message: "must be after period.start" }]);
  return new BillingPeriod(start!, end!);
}
