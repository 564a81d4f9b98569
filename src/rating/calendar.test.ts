import { describe, it, expect } from "vitest";
import { addIntervals, addMonths, toEpochMs, toIso } from "./calendar.js";
import { currencyOf, supportedCurrencies } from "./currency.js";

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
