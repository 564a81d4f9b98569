import { describe, it, expect } from "vitest";
import { addIntervals, addMonths, toEpochMs, toIso } from "./calendar.js";
import { currencyOf, supportedCurrencies } from "./currency.js";
import { billingPeriod, resolvePeriod } from "./period.js";
import { rate } from "./rate.js";

const at = (iso: string) => Date.parse(iso);

describe("calendar", () => {
  it("steps months in UTC, clamping to the end of shorter months and keeping the time of day", () => {
    expect(toIso(addMonths(at("2026-01-31T10:30:00Z"), 1))).toBe("2026-02-28T10:30:00.000Z");
    expect(toIso(addMonths(at("2028-01-31T00:00:00Z"), 1))).toBe("2028-02-29T00:00:00.000Z");
    expect(toIso(addMonths(at("2026-01-31T00:00:00Z"), 2))).toBe("2026-03-31T00:00:00.000Z");
    expect(toIso(addMonths(at("2026-12-15T00:00:00Z"), 1))).toBe("2027-01-15T00:00:00.000Z");
    expect(toIso(addIntervals(at("2028-02-29T00:00:00Z"), "year", 1))).toBe("2029-02-28T00:00:00.000Z");
    expect(toIso(addIntervals(at("2026-11-01T00:00:00Z"), "week", 2))).toBe("2026-11-15T00:00:00.000Z");
  });

  it("accepts only ISO 8601 date-times with a zone", () => {
    expect(toEpochMs("2026-11-01T00:00:00Z")).toBe(at("2026-11-01T00:00:00Z"));
    expect(toEpochMs("2026-11-01T01:00:00+01:00")).toBe(at("2026-11-01T00:00:00Z"));
    expect(toEpochMs("2026-11-01")).toBeUndefined();
    expect(toEpochMs("2026-11-01T00:00:00")).toBeUndefined();
    expect(toEpochMs("Nov 1 2026")).toBeUndefined();
    expect(toEpochMs(new Date(Number.NaN))).toBeUndefined();
  });
});

describe("currencies", () => {
  it("knows ISO 4217 minor units, case-insensitively", () => {
    expect(currencyOf("usd")).toEqual({ code: "USD", exponent: 2 });
    expect(currencyOf("JPY")).toEqual({ code: "JPY", exponent: 0 });
    expect(currencyOf("kwd")).toEqual({ code: "KWD", exponent: 3 });
    expect(currencyOf("CLF")).toEqual({ code: "CLF", exponent: 4 });
    expect(currencyOf("XAU")).toBeUndefined();
    expect(currencyOf("toString")).toBeUndefined();
    expect(supportedCurrencies()).toContain("EUR");
  });
});

describe("billing periods", () => {
  const monthly = { interval: "month" as const, interval_count: "1" };

  it("completes a period from one bound, or from the clock passed in", () => {
    const now = "2026-11-17T10:00:00Z";
    expect(resolvePeriod(monthly, { now }).line).toEqual({
      start: "2026-11-01T00:00:00.000Z",
      end: "2026-12-01T00:00:00.000Z",
    });
    expect(resolvePeriod(monthly, { start: "2026-01-31T00:00:00Z", now }).end).toBe(
      "2026-02-28T00:00:00.000Z",
    );
    expect(resolvePeriod(monthly, { end: "2026-03-01T00:00:00Z", now }).start).toBe(
      "2026-02-01T00:00:00.000Z",
    );
    // ISO weeks start on Monday; 2026-11-17 is a Tuesday.
    expect(resolvePeriod({ interval: "week", interval_count: "1" }, { now }).start).toBe(
      "2026-11-16T00:00:00.000Z",
    );
  });

  it("rejects bad bounds with the field's path", () => {
    expect(() => billingPeriod("2026-11-01", "2026-12-01T00:00:00Z")).toThrow(
      /period\.start: must be an ISO 8601/,
    );
    expect(() => billingPeriod("2026-12-01T00:00:00Z", "2026-11-01T00:00:00Z")).toThrow(
      "period.end: must be after period.start",
    );
  });

  it("rates the same with a parsed period as with timestamps", () => {
    const plan = {
      key: "p",
      currency: "usd",
      prices: [{ key: "f", type: "flat" as const, unit_amount: 100 }],
    };
    const period = billingPeriod("2026-11-01T00:00:00+01:00", "2026-12-01T00:00:00+01:00");
    expect(rate({ plan, period })).toEqual(
      rate({ plan, period: { start: "2026-10-31T23:00:00Z", end: "2026-11-30T23:00:00Z" } }),
    );
  });
});
