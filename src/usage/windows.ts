import { DateTime, IANAZone } from "luxon";

export const windowSizes = ["minute", "hour", "day", "month"] as const;
export type WindowSize = (typeof windowSizes)[number];

/** One window, `[fromMs, toMs)` in epoch milliseconds. */
export interface Window {
  fromMs: number;
  toMs: number;
}

/** Most windows one query may return per group (a month of minutes is 44,640). */
export const maxWindows = 50_000;

/** True when `tz` is an IANA zone name this runtime knows (e.g. `Europe/Berlin`, `UTC`). */
export function isValidZone(tz: string): boolean {
  return IANAZone.isValidZone(tz);
}

/**
 * The windows covering `[fromMs, toMs)` in time zone `tz`, aligned to the zone's wall clock:
 * a day is local midnight to local midnight (23 or 25 hours across DST changes), a month is the
 * local first of the month to the next. The first and last windows are clipped to the range.
 * Without a window size the whole range is one window.
 */
export function windowsOf(fromMs: number, toMs: number, size: WindowSize | undefined, tz: string): Window[] {
  if (size === undefined) return [{ fromMs, toMs }];
  const out: Window[] = [];
  let start = DateTime.fromMillis(fromMs, { zone: tz }).startOf(size);
  while (start.toMillis() < toMs) {
    // The next boundary is the start of the unit k units later, for the smallest k that moves
    // forward. k > 1 only where clocks go back by less than the unit (Lord Howe's 30 minutes):
    // one step lands inside the repeated half hour, whose start of hour is the current start,
    // so that hour lasts 90 minutes, as a fall-back day lasts 25 hours.
    let next = start;
    for (let k = 1; next.toMillis() <= start.toMillis(); k++) {
      next = start.plus({ [`${size}s`]: k }).startOf(size);
    }
    out.push({ fromMs: Math.max(start.toMillis(), fromMs), toMs: Math.min(next.toMillis(), toMs) });
    if (out.length > maxWindows) break;
    start = next;
  }
  return out;
}

/** The calendar month containing `nowMs` in `tz`: the default range of usage answers and the portal. */
export function monthContaining(nowMs: number, tz: string): Window {
  const start = DateTime.fromMillis(nowMs, { zone: tz }).startOf("month");
  return { fromMs: start.toMillis(), toMs: start.plus({ months: 1 }).toMillis() };
}

/** RFC 3339 in the zone's offset (`2026-03-29T00:00:00+01:00`), so a reader sees local boundaries. */
export function formatInZone(ms: number, tz: string): string {
  return (
    DateTime.fromMillis(ms, { zone: tz }).toISO({ suppressMilliseconds: true }) ?? new Date(ms).toISOString()
  );
}
