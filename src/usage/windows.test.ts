import fc from "fast-check";
import { DateTime } from "luxon";
import { describe, expect, it } from "vitest";
import {
  formatInZone,
  isValidZone,
  maxWindows,
  windowsOf,
  zoneFormatter,
  type Window,
  type WindowSize,
} from "./windows.js";

const at = (iso: string) => Date.parse(iso);
const HOUR = 3_600_000;
const hours = (w: Window) => (w.toMs - w.fromMs) / HOUR;
const starts = (ws: Window[], tz: string) => ws.map((w) => formatInZone(w.fromMs, tz));

/** Windows touch end to start, each is non-empty, and together they are exactly `[from, to)`. */
function expectTiling(ws: Window[], fromMs: number, toMs: number): void {
  const problems: string[] = [];
  if (ws.length === 0) problems.push("no windows");
  else {
    if (ws[0]!.fromMs !== fromMs) problems.push(`starts at ${ws[0]!.fromMs}, not ${fromMs}`);
    if (ws.at(-1)!.toMs !== toMs) problems.push(`ends at ${ws.at(-1)!.toMs}, not ${toMs}`);
  }
  ws.forEach((w, i) => {
    if (w.toMs <= w.fromMs) problems.push(`window ${i} is empty`);
    if (i > 0 && w.fromMs !== ws[i - 1]!.toMs) problems.push(`gap or overlap before window ${i}`);
  });
  expect(problems).toEqual([]);
}

/** A window start is a local boundary when luxon's `startOf(size)` in the zone leaves it unchanged. */
const isLocalBoundary = (ms: number, size: WindowSize, tz: string) =>
  DateTime.fromMillis(ms, { zone: tz }).startOf(size).toMillis() === ms;

describe("windowsOf: days across DST in Europe/Berlin", () => {
  it("makes 2026-03-29 a 23-hour day, from local midnight to local midnight", () => {
    const from = at("2026-03-28T00:00:00+01:00");
    const to = at("2026-03-31T00:00:00+02:00");
    const ws = windowsOf(from, to, "day", "Europe/Berlin");
    expectTiling(ws, from, to);
    expect(ws.map(hours)).toEqual([24, 23, 24]);
    expect(starts(ws, "Europe/Berlin")).toEqual([
      "2026-03-28T00:00:00+01:00",
      "2026-03-29T00:00:00+01:00",
      "2026-03-30T00:00:00+02:00",
    ]);
  });

  it("makes 2026-10-25 a 25-hour day, from local midnight to local midnight", () => {
    const from = at("2026-10-24T00:00:00+02:00");
    const to = at("2026-10-27T00:00:00+01:00");
    const ws = windowsOf(from, to, "day", "Europe/Berlin");
    expectTiling(ws, from, to);
    expect(ws.map(hours)).toEqual([24, 25, 24]);
    expect(starts(ws, "Europe/Berlin")).toEqual([
      "2026-10-24T00:00:00+02:00",
      "2026-10-25T00:00:00+02:00",
      "2026-10-26T00:00:00+01:00",
    ]);
  });
});

describe("windowsOf: hours across DST in Europe/Berlin", () => {
  it("gives the fall-back day 25 distinct, contiguous one-hour windows, 02:00 twice", () => {
    const from = at("2026-10-25T00:00:00+02:00");
    const to = at("2026-10-26T00:00:00+01:00");
    const ws = windowsOf(from, to, "hour", "Europe/Berlin");
    expect(ws).toHaveLength(25);
    expectTiling(ws, from, to);
    expect(ws.every((w) => w.toMs - w.fromMs === HOUR)).toBe(true);
    expect(new Set(ws.map((w) => w.fromMs)).size).toBe(25);
    expect(starts(ws, "Europe/Berlin").slice(1, 5)).toEqual([
      "2026-10-25T01:00:00+02:00",
      "2026-10-25T02:00:00+02:00",
      "2026-10-25T02:00:00+01:00",
      "2026-10-25T03:00:00+01:00",
    ]);
  });

  it("gives the spring-forward day 23 one-hour windows and no 02:00", () => {
    const from = at("2026-03-29T00:00:00+01:00");
    const to = at("2026-03-30T00:00:00+02:00");
    const ws = windowsOf(from, to, "hour", "Europe/Berlin");
    expect(ws).toHaveLength(23);
    expectTiling(ws, from, to);
    expect(ws.every((w) => w.toMs - w.fromMs === HOUR)).toBe(true);
    expect(starts(ws, "Europe/Berlin").slice(1, 3)).toEqual([
      "2026-03-29T01:00:00+01:00",
      "2026-03-29T03:00:00+02:00",
    ]);
  });
});

describe("windowsOf: zones with fractional offsets", () => {
  it("starts Asia/Kolkata (+05:30) days at local midnight, 18:30 UTC", () => {
    const from = at("2026-01-01T00:00:00Z"); // 05:30 local: the first day is clipped
    const to = at("2026-01-04T00:00:00Z");
    const ws = windowsOf(from, to, "day", "Asia/Kolkata");
    expectTiling(ws, from, to);
    expect(ws.map((w) => new Date(w.fromMs).toISOString())).toEqual([
      "2026-01-01T00:00:00.000Z",
      "2026-01-01T18:30:00.000Z",
      "2026-01-02T18:30:00.000Z",
      "2026-01-03T18:30:00.000Z",
    ]);
    expect(starts(ws, "Asia/Kolkata")[1]).toBe("2026-01-02T00:00:00+05:30");
    expect(ws.map(hours)).toEqual([18.5, 24, 24, 5.5]);
  });

  it("starts Asia/Kolkata hours at half past the UTC hour", () => {
    const from = at("2026-01-01T00:00:00Z");
    const to = at("2026-01-01T03:00:00Z");
    const ws = windowsOf(from, to, "hour", "Asia/Kolkata");
    expectTiling(ws, from, to);
    expect(ws.map((w) => new Date(w.fromMs).toISOString().slice(11, 16))).toEqual([
      "00:00",
      "00:30",
      "01:30",
      "02:30",
    ]);
    expect(ws.map(hours)).toEqual([0.5, 1, 1, 0.5]);
  });

  it("starts Asia/Kathmandu (+05:45) days and hours at local midnight and local hours", () => {
    const dayWs = windowsOf(at("2026-06-01T00:00:00Z"), at("2026-06-03T00:00:00Z"), "day", "Asia/Kathmandu");
    expect(dayWs.slice(1).map((w) => new Date(w.fromMs).toISOString())).toEqual([
      "2026-06-01T18:15:00.000Z",
      "2026-06-02T18:15:00.000Z",
    ]);
    expect(starts(dayWs, "Asia/Kathmandu")[1]).toBe("2026-06-02T00:00:00+05:45");

    const hourWs = windowsOf(
      at("2026-06-01T00:00:00Z"),
      at("2026-06-01T02:00:00Z"),
      "hour",
      "Asia/Kathmandu",
    );
    expectTiling(hourWs, at("2026-06-01T00:00:00Z"), at("2026-06-01T02:00:00Z"));
    expect(hourWs.map((w) => new Date(w.fromMs).toISOString().slice(11, 16))).toEqual([
      "00:00",
      "00:15",
      "01:15",
    ]);
    expect(starts(hourWs, "Asia/Kathmandu")[1]).toBe("2026-06-01T06:00:00+05:45");
  });
});

describe("windowsOf: months and clipping", () => {
  it("cuts America/New_York months at local midnight of the 1st, clipping the first and last", () => {
    const from = at("2026-01-15T12:00:00Z");
    const to = at("2026-05-10T00:00:00Z");
    const ws = windowsOf(from, to, "month", "America/New_York");
    expectTiling(ws, from, to);
    expect(ws.map((w) => new Date(w.fromMs).toISOString())).toEqual([
      "2026-01-15T12:00:00.000Z",
      "2026-02-01T05:00:00.000Z",
      "2026-03-01T05:00:00.000Z",
      "2026-04-01T04:00:00.000Z",
      "2026-05-01T04:00:00.000Z",
    ]);
    expect(starts(ws, "America/New_York").slice(1)).toEqual([
      "2026-02-01T00:00:00-05:00",
      "2026-03-01T00:00:00-05:00",
      "2026-04-01T00:00:00-04:00",
      "2026-05-01T00:00:00-04:00",
    ]);
    // March loses an hour to DST.
    expect(hours(ws[2]!)).toBe(31 * 24 - 1);
  });

  it("clips the first and last window to [from, to) when neither is on a boundary", () => {
    const from = at("2026-07-01T10:17:23.456Z");
    const to = at("2026-07-03T08:01:00Z");
    const ws = windowsOf(from, to, "day", "UTC");
    expect(ws).toEqual([
      { fromMs: from, toMs: at("2026-07-02T00:00:00Z") },
      { fromMs: at("2026-07-02T00:00:00Z"), toMs: at("2026-07-03T00:00:00Z") },
      { fromMs: at("2026-07-03T00:00:00Z"), toMs: to },
    ]);
  });

  it("returns one clipped window when the range lies inside a single window", () => {
    const from = at("2026-07-01T10:00:00Z");
    const to = at("2026-07-01T11:00:00Z");
    expect(windowsOf(from, to, "month", "Europe/Berlin")).toEqual([{ fromMs: from, toMs: to }]);
  });

  it("returns the whole range as one window without a window size", () => {
    const from = at("2026-01-15T12:00:00Z");
    const to = at("2026-11-02T00:00:00Z");
    expect(windowsOf(from, to, undefined, "Asia/Kathmandu")).toEqual([{ fromMs: from, toMs: to }]);
  });

  it("gives minute windows of exactly one minute", () => {
    const from = at("2026-10-25T00:58:30Z");
    const to = at("2026-10-25T01:02:00Z");
    const ws = windowsOf(from, to, "minute", "Europe/Berlin");
    expectTiling(ws, from, to);
    expect(ws.map((w) => (w.toMs - w.fromMs) / 1000)).toEqual([30, 60, 60, 60]);
  });
});

/** Zones with unusual offsets or DST rules; every one has a DST change in 2026 or a fractional offset. */
const zones = [
  "UTC",
  "Europe/Berlin",
  "America/New_York",
  "America/Los_Angeles",
  "Asia/Kolkata",
  "Asia/Kathmandu",
  "Pacific/Chatham", // +12:45 / +13:45
  "America/Santiago", // DST changes around local midnight
  "America/Havana", // DST changes at midnight
  "Asia/Beirut", // DST changes at midnight
  "America/St_Johns", // -03:30 with DST
] as const;

describe("windowsOf: 30-minute DST shift (Australia/Lord_Howe)", () => {
  it("keeps hour windows on local hours when clocks go back from 02:00+11:00 to 01:30+10:30", () => {
    // 2026-04-05: local 01:00 starts at 14:00Z and the next local hour, 02:00+10:30, at 15:30Z,
    // so the 01:00 window is 90 minutes long (as a fall-back day is 25 hours long).
    const tz = "Australia/Lord_Howe";
    const from = at("2026-04-05T00:00:00+11:00");
    const to = at("2026-04-05T04:00:00+10:30");
    const ws = windowsOf(from, to, "hour", tz);
    expectTiling(ws, from, to);
    expect(starts(ws, tz)).toEqual([
      "2026-04-05T00:00:00+11:00",
      "2026-04-05T01:00:00+11:00",
      "2026-04-05T02:00:00+10:30",
      "2026-04-05T03:00:00+10:30",
    ]);
    expect(ws.map((w) => (w.toMs - w.fromMs) / 60_000)).toEqual([60, 90, 60, 60]);
  });

  it("keeps hour windows on local hours when clocks go forward from 02:00+10:30 to 02:30+11:00", () => {
    const tz = "Australia/Lord_Howe";
    const from = at("2026-10-04T00:00:00+10:30");
    const to = at("2026-10-04T04:00:00+11:00");
    const ws = windowsOf(from, to, "hour", tz);
    expectTiling(ws, from, to);
    expect(starts(ws, tz)).toEqual([
      "2026-10-04T00:00:00+10:30",
      "2026-10-04T01:00:00+10:30",
      "2026-10-04T02:30:00+11:00",
      "2026-10-04T03:00:00+11:00",
    ]);
    expect(ws.map((w) => (w.toMs - w.fromMs) / 60_000)).toEqual([60, 60, 30, 60]);
  });
});

describe("windowsOf: window limit", () => {
  it("returns exactly maxWindows windows for a range of maxWindows minutes", () => {
    const from = at("2026-01-01T00:00:00Z");
    const ws = windowsOf(from, from + maxWindows * 60_000, "minute", "UTC");
    expect(ws).toHaveLength(maxWindows);
  });

  it("stops early, with more than maxWindows windows, so the caller can refuse the range", () => {
    const from = at("2026-01-01T00:00:00Z");
    const ws = windowsOf(from, at("2026-03-01T00:00:00Z"), "minute", "UTC"); // 84,960 minutes
    expect(ws.length).toBeGreaterThan(maxWindows);
    expect(ws.length).toBeLessThan(84_960);
  });
});

describe("windowsOf: invariants (fast-check)", () => {
  const startMs = at("2026-01-01T00:00:00Z");
  const yearMs = 366 * 24 * HOUR;

  it("tiles [from, to) with non-empty windows that start on local boundaries", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: yearMs }),
        fc.oneof(
          fc.record({
            lengthMs: fc.integer({ min: 1, max: 100 * 24 * HOUR }),
            size: fc.constantFrom<WindowSize>("day", "month"),
          }),
          fc.record({
            lengthMs: fc.integer({ min: 1, max: 10 * 24 * HOUR }),
            size: fc.constantFrom<WindowSize>("hour", "day"),
          }),
          fc.record({
            lengthMs: fc.integer({ min: 1, max: 6 * HOUR }),
            size: fc.constantFrom<WindowSize>("minute", "hour"),
          }),
        ),
        fc.constantFrom(...zones),
        (offset, { lengthMs, size }, tz) => {
          const from = startMs + offset;
          const to = from + lengthMs;
          const ws = windowsOf(from, to, size, tz);
          expect(ws.length).toBeLessThanOrEqual(maxWindows);
          expectTiling(ws, from, to);
          for (const w of ws.slice(1)) {
            expect(
              isLocalBoundary(w.fromMs, size, tz),
              `${formatInZone(w.fromMs, tz)} is no ${size} start`,
            ).toBe(true);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("starts every day window of 2026, and every hour window around its DST changes, on a local boundary", () => {
    const from = startMs;
    const to = at("2027-01-01T00:00:00Z");
    for (const tz of [...zones, "Australia/Lord_Howe"]) {
      const days = windowsOf(from, to, "day", tz);
      expectTiling(days, from, to);
      const offDay = days.slice(1).filter((w) => !isLocalBoundary(w.fromMs, "day", tz));
      expect(offDay.map((w) => formatInZone(w.fromMs, tz))).toEqual([]);
      const localDates = new Set(days.map((w) => DateTime.fromMillis(w.fromMs, { zone: tz }).toISODate()));
      expect(localDates.size, `${tz}: two windows for one local date`).toBe(days.length);

      // Hours of the days (with a day either side) whose offset changes.
      const changes = days.filter(
        (w) =>
          DateTime.fromMillis(w.fromMs - 1, { zone: tz }).offset !==
          DateTime.fromMillis(w.toMs, { zone: tz }).offset,
      );
      for (const d of changes) {
        const hFrom = d.fromMs - 24 * HOUR;
        const hTo = d.toMs + 24 * HOUR;
        const hoursWs = windowsOf(hFrom, hTo, "hour", tz);
        expectTiling(hoursWs, hFrom, hTo);
        const offHour = hoursWs.slice(1).filter((w) => !isLocalBoundary(w.fromMs, "hour", tz));
        expect(
          offHour.map((w) => formatInZone(w.fromMs, tz)),
          `${tz}: hour windows not starting on a local hour`,
        ).toEqual([]);
      }
      if (tz !== "UTC" && tz !== "Asia/Kolkata" && tz !== "Asia/Kathmandu") {
        expect(changes.length, `${tz}: DST changes found in 2026`).toBeGreaterThanOrEqual(2);
      }
    }
  });
});

describe("formatInZone", () => {
  it("prints RFC 3339 with the zone's offset at that instant", () => {
    expect(formatInZone(at("2026-01-15T12:00:00Z"), "Europe/Berlin")).toBe("2026-01-15T13:00:00+01:00");
    expect(formatInZone(at("2026-07-15T12:00:00Z"), "Europe/Berlin")).toBe("2026-07-15T14:00:00+02:00");
    expect(formatInZone(at("2026-07-15T12:00:00Z"), "Asia/Kathmandu")).toBe("2026-07-15T17:45:00+05:45");
    expect(formatInZone(at("2026-07-15T12:00:00Z"), "America/New_York")).toBe("2026-07-15T08:00:00-04:00");
  });

  it("keeps milliseconds when there are some", () => {
    expect(formatInZone(at("2026-01-15T12:00:00.250Z"), "Asia/Kolkata")).toBe(
      "2026-01-15T17:30:00.250+05:30",
    );
  });

  it("round-trips through Date.parse to the same instant (fast-check)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: at("2000-01-01T00:00:00Z"), max: at("2100-01-01T00:00:00Z") }),
        fc.constantFrom(...zones),
        (ms, tz) => {
          const s = formatInZone(ms, tz);
          expect(s).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?(Z|[+-]\d\d:\d\d)$/);
          expect(Date.parse(s)).toBe(ms);
        },
      ),
    );
  });
});

describe("isValidZone", () => {
  it("accepts IANA zone names and rejects anything else", () => {
    expect(isValidZone("Europe/Berlin")).toBe(true);
    expect(isValidZone("Asia/Kathmandu")).toBe(true);
    expect(isValidZone("UTC")).toBe(true);
    expect(isValidZone("Mars/Olympus_Mons")).toBe(false);
    expect(isValidZone("")).toBe(false);
    expect(isValidZone("Europe/Berlin; DROP TABLE events")).toBe(false);
  });
});

/** The implementation before the wall-clock fast path: one luxon DateTime per window. */
function luxonWindowsOf(fromMs: number, toMs: number, size: WindowSize, tz: string): Window[] {
  const out: Window[] = [];
  let start = DateTime.fromMillis(fromMs, { zone: tz }).startOf(size);
  while (start.toMillis() < toMs) {
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

describe("windowsOf and formatInZone equal luxon alone (fast-check)", () => {
  // Zones with DST, half-hour DST (Lord Howe), non-hour offsets, a skipped day (Apia 2011),
  // and an offset with seconds (Monrovia, -00:44:30 until 1972).
  const oddZones = [...zones, "Australia/Lord_Howe", "Pacific/Apia", "Africa/Monrovia", "America/Sao_Paulo"];
  const sizes = fc.constantFrom<WindowSize>("minute", "hour", "day", "month");
  const unitMax: Record<WindowSize, number> = {
    minute: 12 * HOUR,
    hour: 20 * 24 * HOUR,
    day: 400 * 24 * HOUR,
    month: 400 * 24 * HOUR,
  };

  it("gives the same windows for random ranges, sizes and zones", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: at("1970-01-01T00:00:00Z"), max: at("2040-01-01T00:00:00Z") }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        sizes,
        fc.constantFrom(...oddZones),
        (from, frac, size, tz) => {
          const to = from + 1 + Math.floor(frac * unitMax[size]);
          expect(windowsOf(from, to, size, tz)).toEqual(luxonWindowsOf(from, to, size, tz));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("gives the same windows around Apia's skipped day, Lord Howe's half hours and Monrovia's 1972 change", () => {
    const cases: [string, string, string][] = [
      ["Pacific/Apia", "2011-12-25T00:00:00Z", "2012-01-05T00:00:00Z"],
      ["Australia/Lord_Howe", "2026-04-01T00:00:00Z", "2026-04-10T00:00:00Z"],
      ["Australia/Lord_Howe", "2026-10-01T00:00:00Z", "2026-10-10T00:00:00Z"],
      ["Africa/Monrovia", "1972-01-01T00:00:00Z", "1972-01-14T00:00:00Z"],
    ];
    for (const [tz, a, b] of cases) {
      for (const size of ["minute", "hour", "day", "month"] as const) {
        const from = at(a);
        const to = size === "minute" ? from + 5 * 24 * HOUR : at(b);
        expect(windowsOf(from, to, size, tz), `${tz} ${size}`).toEqual(luxonWindowsOf(from, to, size, tz));
      }
    }
  });

  it("formats instants as luxon does", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: at("1900-01-01T00:00:00Z"), max: at("2100-01-01T00:00:00Z") }),
        fc.constantFrom(...oddZones),
        fc.integer({ min: 0, max: 60 * 24 * HOUR }),
        (ms, tz, span) => {
          const luxon = DateTime.fromMillis(ms, { zone: tz }).toISO({ suppressMilliseconds: true });
          expect(formatInZone(ms, tz)).toBe(luxon);
          // The range formatter, asked about an instant anywhere in its range.
          expect(zoneFormatter(tz, ms - span, ms + 1)(ms)).toBe(luxon);
          expect(zoneFormatter(tz, ms, ms + span)(ms)).toBe(luxon);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("builds and formats the most windows an answer may have in well under half a second", () => {
    const from = at("2026-03-01T00:00:00Z");
    const t0 = performance.now();
    const to = from + maxWindows * 60_000;
    const ws = windowsOf(from, to, "minute", "Europe/Berlin");
    const format = zoneFormatter("Europe/Berlin", from, to);
    for (const w of ws) format(w.fromMs);
    const ms = performance.now() - t0;
    expect(ws).toHaveLength(maxWindows);
    // ~40 ms on an idle core; luxon alone took ~1 s for these 10,000 (3 s for a month of minutes).
    expect(ms).toBeLessThan(500);
  });
});
