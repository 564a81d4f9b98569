import { describe, expect, it } from "vitest";
import { InvoiceIndex, type InvoiceSummary } from "../billing/index.js";
import { planSchema, type Price } from "../rating/index.js";
import { allowanceOf, includedQuantity, invoicePage, invoicesPerPage } from "./portal-billing.js";
import { minorToDecimal } from "../rating/index.js";
import { formatMoney, formatPeriod } from "./portal-html.js";

/** A price validated as the catalog validates it (as part of a plan). */
const price = (p: Record<string, unknown>): Price =>
  planSchema.parse({
    key: "plan",
    currency: "usd",
    prices: [{ key: "p", type: "metered", meter: "m", ...p }],
  }).prices[0]!;

describe("money on the customer page", () => {
  it("formats integer minor units with the currency's exponent, exactly", () => {
    expect(formatMoney(123456, "USD", 2)).toBe("$1,234.56");
    expect(formatMoney(5, "USD", 2)).toBe("$0.05");
    expect(formatMoney(-250, "EUR", 2)).toBe("-€2.50");
    expect(formatMoney(1234, "JPY", 0)).toBe("¥1,234");
    expect(formatMoney(1234, "KWD", 3)).toBe("KWD\u00a01.234");
    // The largest amount an invoice may hold, to the last digit (a float would round it).
    expect(formatMoney(Number.MAX_SAFE_INTEGER, "USD", 2)).toBe("$90,071,992,547,409.91");
    expect(minorToDecimal(-7, 3)).toBe("-0.007");
    expect(() => minorToDecimal(0.5, 2)).toThrow(RangeError);
  });

  it("shows whole local days as inclusive dates, other periods with times", () => {
    const tz = "Europe/Berlin";
    // A Berlin month starts at 23:00 UTC (22:00 in summer).
    expect(formatPeriod("2026-10-31T23:00:00.000Z", "2026-11-30T23:00:00.000Z", tz)).toBe(
      "1 Nov 2026 – 30 Nov 2026",
    );
    expect(formatPeriod("2026-11-29T23:00:00.000Z", "2026-11-30T23:00:00.000Z", tz)).toBe("30 Nov 2026");
    expect(formatPeriod("2026-11-05T13:30:00.000Z", "2026-12-05T13:30:00.000Z", tz)).toBe(
      "5 Nov 2026, 14:30 – 5 Dec 2026, 14:30 GMT+1",
    );
  });
});

describe("included allowance, from the price definition", () => {
  it("reads included_quantity, and the free leading tiers of a graduated price", () => {
    expect(includedQuantity(price({ unit_amount: 2, included_quantity: 10 }))).toBe("10");
    const graduated = (tiers: unknown[], extra = {}) =>
      price({ billing_scheme: "tiered", tiers_mode: "graduated", tiers, ...extra });
    expect(
      includedQuantity(
        graduated([
          { up_to: 1000, unit_amount: 0 },
          { up_to: 5000, flat_amount_decimal: "0" },
          { up_to: "inf", unit_amount_decimal: "0.5" },
        ]),
      ),
    ).toBe("5000");
    // Applied after included_quantity: both add up.
    expect(
      includedQuantity(
        graduated(
          [
            { up_to: 100, unit_amount: 0 },
            { up_to: "inf", unit_amount: 1 },
          ],
          { included_quantity: "0.5" },
        ),
      ),
    ).toBe("100.5");
    // A first tier with a flat fee is not free.
    expect(
      includedQuantity(
        graduated([
          { up_to: 100, unit_amount: 0, flat_amount: 500 },
          { up_to: "inf", unit_amount: 1 },
        ]),
      ),
    ).toBeNull();
  });

  it("has none for volume tiers, prices free without limit, or no allowance at all", () => {
    // Volume: past 1,000 every unit is priced, so the first 1,000 are not "included".
    expect(
      includedQuantity(
        price({
          billing_scheme: "tiered",
          tiers_mode: "volume",
          tiers: [
            { up_to: 1000, unit_amount: 0 },
            { up_to: "inf", unit_amount: 1 },
          ],
        }),
      ),
    ).toBeNull();
    expect(
      includedQuantity(
        price({
          billing_scheme: "tiered",
          tiers_mode: "graduated",
          tiers: [{ up_to: "inf", unit_amount: 0 }],
        }),
      ),
    ).toBeNull();
    expect(includedQuantity(price({ unit_amount: 3 }))).toBeNull();
    expect(includedQuantity(price({ unit_amount: 3, included_quantity: 0 }))).toBeNull();
  });

  it("computes progress exactly: percent rounded down, over by the exact excess", () => {
    expect(allowanceOf("7", "10")).toEqual({ used: "7", included: "10", percent: "70", over: null });
    expect(allowanceOf("10", "10")).toMatchObject({ percent: "100", over: null });
    expect(allowanceOf("1201.5", "1000")).toMatchObject({ percent: "120", over: "201.5" });
    expect(allowanceOf("0.1", "3")).toMatchObject({ percent: "3" }); // 3.33… → 3
    expect(allowanceOf("0.3", "0.1")).toMatchObject({ percent: "300", over: "0.2" }); // no float drift
  });
});

describe("past invoices page", () => {
  const summary = (i: number, customer = "acme", status: "draft" | "finalized" = "finalized") =>
    ({
      id: `inv_${String(i).padStart(24, "0")}`,
      number: status === "finalized" ? `T-${i}` : null,
      status,
      customer,
      subscription: `${customer}-s`,
      period_start: new Date(Date.UTC(2026, 0, 1 + i)).toISOString(),
      period_end: new Date(Date.UTC(2026, 0, 2 + i)).toISOString(),
      currency: "USD",
      total: i,
      finalized_at: status === "finalized" ? new Date(Date.UTC(2026, 0, 3 + i)).toISOString() : null,
    }) satisfies InvoiceSummary;

  it("pages the customer's finalized invoices, newest first, and counts them all", () => {
    const index = new InvoiceIndex();
    for (let i = 1; i <= invoicesPerPage + 3; i++) index.set(summary(i));
    index.set(summary(100, "globex"));
    index.set(summary(101, "acme", "draft"));
    const first = invoicePage(index, "acme", 1);
    expect(first).toMatchObject({ total: invoicesPerPage + 3, page: 1, pages: 2, offset: 0 });
    expect(first.data.map((s) => s.total)).toEqual(
      Array.from({ length: invoicesPerPage }, (_, k) => invoicesPerPage + 3 - k),
    );
    const second = invoicePage(index, "acme", 2);
    expect(second.data.map((s) => s.total)).toEqual([3, 2, 1]);
    expect(second.offset).toBe(invoicesPerPage);
    // Out of range pages clamp.
    expect(invoicePage(index, "acme", 99).page).toBe(2);
    expect(invoicePage(index, "acme", -1).page).toBe(1);
    expect(invoicePage(index, "nobody", 1)).toMatchObject({ total: 0, page: 1, pages: 1, data: [] });
  });
});
