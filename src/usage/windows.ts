import { DateTime, IANAZone, Info, type Zone } from "luxon";

export const windowSizes = ["minute", "hour", "day", "month"] as const;
export type WindowSize = (typeof windowSizes)[number];

/** One window, `[fromMs, toMs)` in epoch milliseconds. */
export interface Window {
  fromMs: number;
  toMs: number;
}

/**
 * Most windows one answer may have (per group): a day of minutes is 1,440, a month of hours 744,
 * a year of days 366. A larger question is refused (400 naming `window`) before any window is
 * built, so what one request can cost the edge is bounded: each window is formatted and, for
 * gauges, swept once (see `usage/README.md`).
 */
export const maxWindows = 10_000;

/** Zone names found valid (a few hundred exist); luxon's check builds an Intl formatter each time. */
const validZones = new Set<string>();

/** True when `tz` is an IANA zone name this runtime knows (e.g. `Europe/Berlin`, `UTC`). */
export function isValidZone(tz: string): boolean {
  if (validZones.has(tz)) return true;
  // Only valid names are remembered: any text can be asked, the set stays the size of the zone list.
  if (!IANAZone.isValidZone(tz)) return false;
  validZones.add(tz);
  return true;
}

const unitMs = { minute: 60_000, hour: 3_600_000, day: 86_400_000 } as const;

/** Offsets are sampled this far apart; two offset changes closer than this would be missed. */
const sampleMs = 6 * 3_600_000;

/**
 * The zone's UTC offset (ms) at any instant of a range, from a table of its offset changes:
 * luxon's `zone.offset()` costs ~9 µs (an Intl formatToParts), too much to call per window.
 * The range is sampled every 6 hours and each change found is located to the millisecond by
 * bisection. No zone changes its offset twice within 6 hours (tzdb's closest pairs are weeks
 * apart); the property test against luxon alone covers the zones with odd histories.
 */
export function offsetsOf(tz: string, fromMs: number, toMs: number): (ms: number) => number {
  const zone = Info.normalizeZone(tz);
  if (zone.isUniversal) {
    const off = zone.offset(fromMs) * 60_000;
    return () => off;
  }
  const off = (ms: number) => zone.offset(ms) * 60_000;
  // Changes: [instant, offset from that instant on], ascending.
  const lo = fromMs - 32 * unitMs.day;
  const hi = toMs + 40 * unitMs.day;
  const first = off(lo);
  const changes: [number, number][] = [];
  let prevMs = lo;
  let prevOff = first;
  for (let t = lo + sampleMs; ; t = Math.min(t + sampleMs, hi)) {
    const o = off(t);
    if (o !== prevOff) {
      let a = prevMs; // offset prevOff
      let b = t; // offset o
      while (b - a > 1) {
        const m = Math.floor((a + b) / 2);
        if (off(m) === prevOff) a = m;
        else b = m;
      }
      changes.push([b, o]);
    }
    prevMs = t;
    prevOff = o;
    if (t >= hi) break;
  }
  return (ms) => {
    // The first window starts before `from` (at most a month); outside the table, ask the zone.
    if (ms < lo || ms > hi) return off(ms);
    let result = first;
    for (const [at, o] of changes) {
      if (ms < at) break;
      result = o;
    }
    return result;
  };
}

/**
 * Wall-clock arithmetic is exact only while the zone's offset stays the same; every boundary
 * computed that way is checked against the offset table, and any step across an offset change
 * is taken by luxon instead. Same windows as luxon alone (a property test compares them),
 * without a luxon DateTime per window: a month of minutes took 3 s of blocked event loop.
 */
export function windowsOf(fromMs: number, toMs: number, size: WindowSize | undefined, tz: string): Window[] {
  if (size === undefined) return [{ fromMs, toMs }];
  const zone = Info.normalizeZone(tz);
  const offsetAt = offsetsOf(tz, fromMs, toMs);
  const out: Window[] = [];
  let start = DateTime.fromMillis(fromMs, { zone }).startOf(size).toMillis();
  while (start < toMs) {
    const next = fastNext(offsetAt, start, size) ?? luxonNext(zone, start, size);
    out.push({ fromMs: Math.max(start, fromMs), toMs: Math.min(next, toMs) });
    if (out.length > maxWindows) break;
    start = next;
  }
  return out;
}

/** The boundary after `start` by plain arithmetic on the wall clock, or null near an offset change. */
function fastNext(offsetAt: (ms: number) => number, start: number, size: WindowSize): number | null {
  const off = offsetAt(start);
  const local = start + off;
  let nextLocal: number;
  if (size === "month") {
    const d = new Date(local);
    nextLocal = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
  } else {
    const u = unitMs[size];
    // `start` is a boundary, so local is on the unit; anything else means the clock is odd here.
    if (((local % u) + u) % u !== 0) return null;
    nextLocal = local + u;
  }
  const next = nextLocal - off;
  // The offset must hold all the way to the next boundary (no change in between: see offsetsOf).
  if (offsetAt(next - 1) !== off || offsetAt(next) !== off) return null;
  return next;
}

function luxonNext(zone: Zone, startMs: number, size: WindowSize): number {
  // The next boundary is the start of the unit k units later, for the smallest k that moves
  // forward. k > 1 only where clocks go back by less than the unit (Lord Howe's 30 minutes):
  // one step lands inside the repeated half hour, whose start of hour is the current start,
  // so that hour lasts 90 minutes, as a fall-back day lasts 25 hours.
  const start = DateTime.fromMillis(startMs, { zone });
  let next = start;
  for (let k = 1; next.toMillis() <= startMs; k++) {
    next = start.plus({ [`${size}s`]: k }).startOf(size);
  }
  return next.toMillis();
}

/** The calendar month containing `nowMs` in `tz`: the default range of usage answers and the portal. */
export function monthContaining(nowMs: number, tz: string): Window {
  const start = DateTime.fromMillis(nowMs, { zone: tz }).startOf("month");
  return { fromMs: start.toMillis(), toMs: start.plus({ months: 1 }).toMillis() };
}

/** Offset suffix (`Z`, `+05:30`) per zone and offset, as luxon prints it. */
const suffixes = new Map<string, string>();

/**
 * RFC 3339 in the zone's offset (`2026-03-29T00:00:00+01:00`), so a reader sees local boundaries.
 */
export function formatInZone(ms: number, tz: string): string {
  return formatIn(ms, Info.normalizeZone(tz), Info.normalizeZone(tz).offset(ms) * 60_000);
}

/**
 * {@link formatInZone} for many instants of one range (an answer formats every window boundary):
 * the offset comes from the range's offset table instead of a ~9 µs zone lookup each.
 */
export function zoneFormatter(tz: string, fromMs: number, toMs: number): (ms: number) => string {
  const zone = Info.normalizeZone(tz);
  const offsetAt = offsetsOf(tz, fromMs, toMs);
  return (ms) => formatIn(ms, zone, offsetAt(ms));
}

/** Luxon's `toISO({ suppressMilliseconds: true })`, built from `Date` once the offset's suffix is known. */
function formatIn(ms: number, zone: Zone, off: number): string {
  const local = new Date(ms + off);
  const year = local.getUTCFullYear();
  if (!Number.isFinite(off) || year < 1000 || year > 9999) return luxonIso(ms, zone);
  const key = `${zone.name}\u0000${off}`;
  let suffix = suffixes.get(key);
  if (suffix === undefined) {
    suffix = luxonIso(ms, zone)
      .slice(19)
      .replace(/^\.\d{3}/, "");
    if (suffixes.size > 10_000) suffixes.clear();
    suffixes.set(key, suffix);
  }
  const iso = local.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const millis = local.getUTCMilliseconds() === 0 ? "" : iso.slice(19, 23);
  return `${iso.slice(0, 19)}${millis}${suffix}`;
}

function luxonIso(ms: number, zone: Zone): string {
  return (
    DateTime.fromMillis(ms, { zone }).toISO({ suppressMilliseconds: true }) ?? new Date(ms).toISOString()
  );
}
