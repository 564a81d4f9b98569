import Big from "big.js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fromNano, gaugeBucketing, gaugeValue, sweepGauge, toNano } from "./query.js";
import { windowsOf } from "./windows.js";

const decimal = fc
  .tuple(fc.boolean(), fc.stringMatching(/^[0-9]{1,20}$/), fc.option(fc.stringMatching(/^[0-9]{1,9}$/)))
  .map(([neg, int, frac]) => `${neg ? "-" : ""}${int}${frac === null ? "" : `.${frac}`}`);

describe("exact gauge numbers (integers of 1e-9)", () => {
  it("round-trips every plain decimal to its shortest exact form, as big.js prints it (fast-check)", () => {
    fc.assert(
      fc.property(decimal, (v) => {
        expect(fromNano(toNano(v))).toBe(new Big(v).toFixed().replace(/^-0$/, "0"));
      }),
    );
  });

  it("divides once, rounding half away from zero to 9 places, as big.js roundHalfUp does (fast-check)", () => {
    const D = Big();
    D.DP = 9;
    D.RM = Big.roundHalfUp;
    fc.assert(
      fc.property(decimal, fc.integer({ min: 1, max: 400 * 86_400_000 }), (v, ms) => {
        const w = { weighted: toNano(v) * BigInt(ms), covered: ms, peak: null };
        expect(gaugeValue("time_weighted_avg", w, 1)).toBe(
          new D(v).times(ms).div(ms).toFixed().replace(/^-0$/, "0"),
        );
        expect(gaugeValue("time_weighted_sum", w, 3_600_000)).toBe(
          new D(v).times(ms).div(3_600_000).toFixed().replace(/^-0$/, "0"),
        );
      }),
    );
  });
});

describe("sweepGauge", () => {
  const H = 3_600_000;
  const from = Date.UTC(2026, 0, 1);
  const hours = windowsOf(from, from + 4 * H, "hour", "UTC");
  const n = (v: string) => toNano(v);

  it("holds a level across windows, counts the carried-in level for the first window's peak, stops at the horizon", () => {
    // Carried in: 7. At 00:00 exactly the level becomes 2 (the 7 held for 0 ms); 01:30 → 5.
    const out = sweepGauge(
      hours,
      [
        { t1: from, tk: from, lk: n("2"), mx: n("2"), inner: 0n },
        { t1: from + 1.5 * H, tk: from + 1.5 * H, lk: n("5"), mx: n("5"), inner: 0n },
      ],
      n("7"),
      from + 3 * H,
    );
    expect(out.map((w) => gaugeValue("peak", w, H))).toEqual(["7", "5", "5", null]);
    expect(out.map((w) => gaugeValue("time_weighted_sum", w, H))).toEqual(["2", "3.5", "5", "0"]);
    expect(out.map((w) => gaugeValue("time_weighted_avg", w, H))).toEqual(["2", "3.5", "5", null]);
  });

  it("refuses a bucket that straddles two windows", () => {
    expect(() =>
      sweepGauge(
        hours,
        [{ t1: from + 0.5 * H, tk: from + 1.5 * H, lk: 0n, mx: 0n, inner: 0n }],
        null,
        from + 4 * H,
      ),
    ).toThrow(/one window/);
  });

  it("picks buckets that nest in the windows: a minute, Kolkata's half hour, a Berlin hour, a UTC day", () => {
    const day = Date.UTC(2026, 2, 1);
    const month = day + 31 * 86_400_000;
    expect(gaugeBucketing(windowsOf(day, day + H, "minute", "UTC"), day).bucketMs).toBe(60_000);
    expect(gaugeBucketing(windowsOf(day, month, "hour", "Asia/Kolkata"), day).bucketMs).toBe(1_800_000);
    expect(gaugeBucketing(windowsOf(day, month, "day", "Europe/Berlin"), day).bucketMs).toBe(H);
    expect(gaugeBucketing(windowsOf(day, month, "day", "UTC"), day).bucketMs).toBe(86_400_000);
    expect(gaugeBucketing(windowsOf(day, month, undefined, "UTC"), day).bucketMs).toBe(86_400_000);
  });
});
