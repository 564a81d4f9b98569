import type { Interval } from "./plan-schema.js";

/*
 * Time for rating is an integer count of milliseconds since the epoch (UTC). Only integer
 * arithmetic is done on it (differences, calendar steps), all well inside 2^53.
 */

/** A point in time: an ISO 8601 string with a zone (`Z` or `+02:00`), or a Date. */
export type Timestamp = string | Date;

const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?(?:Z|[+-]\d{2}:\d{2})$/;

/**
 * Parses a timestamp to epoch milliseconds, or returns `undefined` if it is not a strict ISO 8601
 * date-time with a zone (a bare `2026-11-01` is refused: it would silently mean UTC midnight to
 * one reader and local midnight to another).
 */
export function toEpochMs(value: Timestamp): number | undefined {
  if (value instanceof Date) {
    const ms = value.getTime();
    return Number.isFinite(ms) ? ms : undefined;
  }
  if (typeof value !== "string" || !ISO_RE.test(value)) return undefined;
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? ms : undefined;
}

/** Epoch milliseconds to ISO 8601 UTC with milliseconds, e.g. `2026-11-01T00:00:00.000Z`. */
export function toIso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * Adds calendar months in UTC, clamping to the end of a shorter month (Jan 31 + 1 month = Feb 28,
 * or Feb 29 in a leap year), keeping the time of day. This is how billing anchors step.
 */
export function addMonths(ms: number, months: number): number {
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  const month = d.getUTCMonth() + months;
  const lastDay = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  const day = Math.min(d.getUTCDate(), lastDay);
  return Date.UTC(
    year,
    month,
    day,
    d.getUTCHours(),
    d.getUTCMinutes(),
    d.getUTCSeconds(),
    d.getUTCMilliseconds(),
  );
}

const DAY_MS = 86_400_000;

/** Adds `count` billing intervals (calendar months/years in UTC, or fixed-length days/weeks). */
export function addIntervals(ms: number, interval: Interval, count: number): number {
  switch (interval) {
    case "day":
      return ms + count * DAY_MS;
    case "week":
      return ms + count * 7 * DAY_MS;
    case "month":
      return addMonths(ms, count);
    case "year":
      return addMonths(ms, count * 12);
  }
}
