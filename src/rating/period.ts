import { addIntervals, toEpochMs, toIso } from "./calendar.js";
import type { Timestamp } from "./calendar.js";
import { RatingInputError } from "./errors.js";
import type { RatingIssue } from "./errors.js";
import type { Interval } from "./plan-schema.js";

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
 * resolvePeriod(plan, { start: "2026-11-01T00:00:00Z", now });  // { start: "2026-11-01T00:00:00.000Z", end: "2026-12-01T00:00:00.000Z" }
 * ```
 */
export function resolvePeriod(
  plan: HasInterval,
  bounds: { readonly start?: Timestamp; readonly end?: Timestamp; readonly now: Timestamp },
): { start: string; end: string } {
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
  return { start: toIso(start!), end: toIso(end!) };
}
