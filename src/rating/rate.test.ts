import { describe, it, expect } from "vitest";
import { addMonths, toIso } from "./calendar.js";
import { RatingInputError } from "./errors.js";
import type { PlanInput } from "./plan-schema.js";
import { compilePlan } from "./pricing.js";
import { rate } from "./rate.js";
import type { RatingInput } from "./rate.js";
import type { LineItem, RatedInvoice } from "./types.js";

const NOV = { start: "2026-11-01T00:00:00Z", end: "2026-12-01T00:00:00Z" } as const; // 30 days

function amounts(invoice: RatedInvoice): Array<[string, number]> {
  return invoice.lines.map((l) => [`${l.kind}:${l.discount?.key ?? l.price ?? ""}`, l.amount]);
}

function sum(lines: readonly LineItem[]): number {
  return lines.reduce((s, l) => s + l.amount, 0);
}

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof RatingInputError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  throw new Error("expected a RatingInputError");
}

const team: PlanInput = {
  key: "team",
  currency: "usd",
  prices: [
    { key: "platform", type: "flat", nickname: "Platform fee", unit_amount: 10000 },
    { key: "seats", type: "seat", nickname: "Seats", unit_amount: 1500 },
    {
      key: "api",
      type: "metered",
      meter: "api_calls",
      nickname: "API calls",
      unit_amount_decimal: "0.05",
      included_quantity: "100000",
    },
  ],
};

describe("a full period", () => {
  it("bills flat fee, seats and usage beyond the included quantity", () => {
    const invoice = rate({ plan: team, period: NOV, seats: 5, usage: { api_calls: "1250000" } });
    expect(amounts(invoice)).toEqual([
      ["flat:platform", 10000],
      ["seat:seats", 7500],
      ["usage:api", 57500], // (1,250,000 − 100,000) × 0.05
    ]);
    expect(invoice.lines[2]).toMatchObject({
      meter: "api_calls",
      quantity: "1250000",
      included_quantity: "100000",
      billable_quantity: "1150000",
      unit_amount_decimal: "0.05",
      period: { start: "2026-11-01T00:00:00.000Z", end: "2026-12-01T00:00:00.000Z" },
    });
    expect(invoice).toMatchObject({ currency: "USD", currency_exponent: 2, subtotal: 75000, total: 75000 });
  });

  it("bills a zero-usage line rather than leaving the price off the invoice", () => {
    const invoice = rate({ plan: team, period: NOV, seats: 1 });
    expect(invoice.lines[2]).toMatchObject({ quantity: "0", billable_quantity: "0", amount: 0 });
  });

  it("rounds each line once, half away from zero, never the parts", () => {
    const plan: PlanInput = {
      key: "r",
      currency: "usd",
      prices: [
        { key: "a", type: "metered", meter: "a", unit_amount_decimal: "0.5" },
        { key: "b", type: "metered", meter: "b", unit_amount_decimal: "0.5" },
        {
          key: "g",
          type: "metered",
          meter: "g",
          billing_scheme: "tiered",
          tiers_mode: "graduated",
          tiers: [
            { up_to: 1, unit_amount_decimal: "0.4" },
            { up_to: "inf", unit_amount_decimal: "0.4" },
          ],
        },
      ],
    };
    const invoice = rate({ plan, period: NOV, usage: { a: "1", b: "3", g: "2" } });
    // 0.5 → 1 and 1.5 → 2 (ties away from zero); the graduated line is 0.4 + 0.4 = 0.8 → 1,
    // where rounding each tier first would have given 0 + 0 = 0.
    expect(amounts(invoice)).toEqual([
      ["usage:a", 1],
      ["usage:b", 2],
      ["usage:g", 1],
    ]);
  });
});

describe("currencies", () => {
  it("uses the ISO 4217 minor unit: JPY has none, KWD has three decimals", () => {
    const jpy = rate({
      plan: {
        key: "jp",
        currency: "jpy",
        prices: [{ key: "api", type: "metered", meter: "api", unit_amount_decimal: "0.5" }],
      },
      period: NOV,
      usage: { api: 1001 },
    });
    expect(jpy).toMatchObject({ currency: "JPY", currency_exponent: 0, total: 501 }); // ¥500.5 → ¥501

    const kwd = rate({
      plan: {
        key: "kw",
        currency: "KWD",
        prices: [{ key: "platform", type: "flat", unit_amount: 12500 }],
      },
      period: NOV,
    });
    expect(kwd).toMatchObject({ currency: "KWD", currency_exponent: 3, total: 12500 }); // 12.500 KWD
  });
});

describe("seats and proration", () => {
  it("splits seat lines at a seat change and prorates each by its exact share of the period", () => {
    const invoice = rate({
      plan: team,
      period: NOV,
      seats: 5,
      changes: [{ type: "seats", at: "2026-11-16T00:00:00Z", seats: 8 }],
    });
    const seatLines = invoice.lines.filter((l) => l.kind === "seat");
    expect(seatLines).toEqual([
      expect.objectContaining({
        quantity: "5",
        amount: 3750, // 5 × 1500 × 15/30
        period: { start: "2026-11-01T00:00:00.000Z", end: "2026-11-16T00:00:00.000Z" },
        proration: { seconds: "1296000", period_seconds: "2592000" },
        description: "Seats (prorated)",
      }),
      expect.objectContaining({ quantity: "8", amount: 6000 }), // 8 × 1500 × 15/30
    ]);
    // The flat fee is not affected by a seat change.
    expect(invoice.lines[0]).toMatchObject({ kind: "flat", amount: 10000 });
    expect(invoice.lines[0]!.proration).toBeUndefined();
  });

  it("rounds each prorated line once (1000 × 10/30 = 333.33… → 333)", () => {
    const plan: PlanInput = {
      key: "s",
      currency: "usd",
      prices: [{ key: "seat", type: "seat", unit_amount: 1000 }],
    };
    const invoice = rate({
      plan,
      period: NOV,
      seats: 1,
      changes: [{ type: "seats", at: "2026-11-11T00:00:00Z", seats: 2 }],
    });
    expect(invoice.lines.map((l) => l.amount)).toEqual([333, 1333]); // 2000 × 20/30 = 1333.33…
    expect(invoice.total).toBe(1666);
  });

  it("merges back-to-back segments with the same seat count", () => {
    const invoice = rate({
      plan: team,
      period: NOV,
      seats: 5,
      changes: [{ type: "seats", at: "2026-11-10T00:00:00Z", seats: 5 }],
    });
    expect(invoice.lines.filter((l) => l.kind === "seat")).toEqual([
      expect.objectContaining({ quantity: "5", amount: 7500 }),
    ]);
  });

  it("prorates fees from a subscription start inside the period, ties rounding up", () => {
    const invoice = rate({
      plan: { key: "f", currency: "usd", prices: [{ key: "fee", type: "flat", unit_amount: 1001 }] },
      period: NOV,
      subscriptionStart: "2026-11-16T00:00:00Z",
    });
    expect(invoice.lines[0]).toMatchObject({
      amount: 501, // 1001 × 15/30 = 500.5
      period: { start: "2026-11-16T00:00:00.000Z", end: "2026-12-01T00:00:00.000Z" },
    });
  });

  it("bills a tiered (volume) seat price on the seat count", () => {
    const plan: PlanInput = {
      key: "v",
      currency: "usd",
      prices: [
        {
          key: "seats",
          type: "seat",
          billing_scheme: "tiered",
          tiers_mode: "volume",
          tiers: [
            { up_to: 10, unit_amount: 2000 },
            { up_to: "inf", unit_amount: 1500 },
          ],
        },
      ],
    };
    const invoice = rate({ plan, period: NOV, seats: 12 });
    expect(invoice.lines[0]).toMatchObject({ amount: 18000, unit_amount_decimal: null });
    expect(invoice.lines[0]!.tiers).toHaveLength(1);
  });
});

describe("plan changes", () => {
  const starter: PlanInput = {
    key: "starter",
    currency: "usd",
    prices: [
      { key: "base", type: "flat", unit_amount: 2900 },
      {
        key: "api",
        type: "metered",
        meter: "api_calls",
        unit_amount_decimal: "0.1",
        included_quantity: 1000,
      },
    ],
  };
  const pro: PlanInput = {
    key: "pro",
    currency: "usd",
    prices: [
      { key: "base", type: "flat", unit_amount: 9900 },
      {
        key: "api",
        type: "metered",
        meter: "api_calls",
        unit_amount_decimal: "0.08",
        included_quantity: 10000,
      },
    ],
  };

  it("bills the old plan up to the change and the new plan after it", () => {
    const invoice = rate({
      plan: starter,
      period: NOV,
      usage: { api_calls: 5000 },
      changes: [{ type: "plan", at: "2026-11-11T00:00:00Z", plan: pro, usage: { api_calls: 20000 } }],
    });
    expect(invoice.lines.map((l) => [l.plan, l.price, l.amount, l.period.start, l.period.end])).toEqual([
      ["starter", "base", 967, "2026-11-01T00:00:00.000Z", "2026-11-11T00:00:00.000Z"], // 2900 × 10/30
      ["starter", "api", 400, "2026-11-01T00:00:00.000Z", "2026-11-11T00:00:00.000Z"], // 4000 × 0.1
      ["pro", "base", 6600, "2026-11-11T00:00:00.000Z", "2026-12-01T00:00:00.000Z"], // 9900 × 20/30
      ["pro", "api", 800, "2026-11-11T00:00:00.000Z", "2026-12-01T00:00:00.000Z"], // 10000 × 0.08
    ]);
    expect(invoice.total).toBe(8767);
  });

  it("refuses a change to another currency or billing interval", () => {
    const issues = issuesOf(() =>
      rate({
        plan: starter,
        period: NOV,
        changes: [
          { type: "plan", at: "2026-11-11T00:00:00Z", plan: { ...pro, currency: "eur", interval: "year" } },
        ],
      }),
    );
    expect(issues).toEqual([
      "changes[0].plan.currency: must be USD like the plan it replaces (one invoice, one currency)",
      "changes[0].plan.interval: must be 1 month like the plan it replaces; a new billing interval starts a new billing period",
    ]);
  });
});

describe("minimum commitment and spend cap", () => {
  const plan: PlanInput = {
    key: "c",
    currency: "usd",
    prices: [
      { key: "platform", type: "flat", unit_amount: 10000 },
      { key: "api", type: "metered", meter: "api_calls", unit_amount: 2 },
    ],
    minimum_commitment: { amount: 50000 },
    spend_cap: { amount: 100000 },
  };

  it("adds a true-up line when spend falls short of the commitment", () => {
    const invoice = rate({ plan, period: NOV, usage: { api_calls: 10000 } });
    expect(invoice.lines.at(-1)).toMatchObject({
      kind: "minimum_commitment",
      amount: 20000, // 50,000 − (10,000 + 20,000)
      commitment: { amount: 50000, spend: 30000 },
    });
    expect(invoice.total).toBe(50000);
  });

  it("adds nothing when spend meets the commitment", () => {
    const invoice = rate({ plan, period: NOV, usage: { api_calls: 20000 } });
    expect(invoice.lines.map((l) => l.kind)).toEqual(["flat", "usage"]);
    expect(invoice.total).toBe(50000);
  });

  it("caps usage charges (not the flat fee) at the spend cap", () => {
    const invoice = rate({ plan, period: NOV, usage: { api_calls: 75000 } });
    expect(invoice.lines.at(-1)).toMatchObject({
      kind: "spend_cap",
      amount: -50000,
      spend_cap: { amount: 100000, usage_amount: 150000 },
    });
    expect(invoice.total).toBe(110000);
  });

  it("prorates commitment and cap by the time the plan was in effect", () => {
    const invoice = rate({
      plan,
      period: NOV,
      subscriptionStart: "2026-11-21T00:00:00Z", // 10 of 30 days
      usage: { api_calls: 100 },
    });
    // flat 10000 × 1/3 = 3333.33 → 3333; usage 200; commitment 50000/3 = 16666.67 → 16667.
    expect(amounts(invoice)).toEqual([
      ["flat:platform", 3333],
      ["usage:api", 200],
      ["minimum_commitment:", 13134],
    ]);
    expect(invoice.total).toBe(16667);
  });
});

describe("discounts", () => {
  const annual: PlanInput = {
    key: "enterprise",
    currency: "usd",
    interval: "year",
    prices: [
      { key: "platform", type: "flat", nickname: "Enterprise platform", unit_amount: 1_000_000 },
      { key: "api", type: "metered", meter: "api_calls", unit_amount: 1 },
    ],
    discounts: [
      {
        key: "first_year",
        name: "20% off the first year",
        percent_off: 20,
        duration: "repeating",
        duration_in_months: 12,
        applies_to: { price: "platform" },
      },
    ],
  };

  it("applies a 20% first-year discount to the first year's invoice and not the second", () => {
    const y1 = rate({
      plan: annual,
      period: { start: "2026-01-01T00:00:00Z", end: "2027-01-01T00:00:00Z" },
      subscriptionStart: "2026-01-01T00:00:00Z",
      usage: { api_calls: 500 },
    });
    expect(amounts(y1)).toEqual([
      ["flat:platform", 1_000_000],
      ["discount:first_year", -200_000],
      ["usage:api", 500],
    ]);
    expect(y1.lines[1]).toMatchObject({
      price: "platform",
      description: "20% off the first year",
      discount: { key: "first_year", percent_off: "20", base_amount: 1_000_000, scope: "price" },
    });
    expect(y1).toMatchObject({ subtotal: 800_500, total: 800_500 });

    const y2 = rate({
      plan: annual,
      period: { start: "2027-01-01T00:00:00Z", end: "2028-01-01T00:00:00Z" },
      subscriptionStart: "2026-01-01T00:00:00Z",
    });
    expect(y2.lines.some((l) => l.kind === "discount")).toBe(false);
    expect(y2.total).toBe(1_000_000);
  });

  it("on a monthly plan, appears on each of the first 12 invoices and disappears on the 13th", () => {
    const monthly: PlanInput = {
      key: "m",
      currency: "usd",
      prices: [{ key: "platform", type: "flat", unit_amount: 83333 }],
      discounts: [{ key: "y1", percent_off: "20", duration: "repeating", duration_in_periods: 12 }],
    };
    const plan = compilePlan(monthly);
    const anchor = Date.parse("2026-01-31T00:00:00Z"); // month-end anchor: periods clamp to Feb 28 etc.
    const discounted = [];
    for (let i = 0; i < 14; i++) {
      const invoice = rate({
        plan,
        period: { start: toIso(addMonths(anchor, i)), end: toIso(addMonths(anchor, i + 1)) },
        subscriptionStart: toIso(anchor),
      });
      discounted.push(invoice.lines.find((l) => l.kind === "discount")?.amount ?? 0);
    }
    // 83,333 × 20% = 16,666.6 → 16,667
    expect(discounted).toEqual([...Array<number>(12).fill(-16667), 0, 0]);
  });

  it("applies a once discount to the first invoice only", () => {
    const plan: PlanInput = {
      key: "o",
      currency: "usd",
      prices: [{ key: "fee", type: "flat", unit_amount: 5000 }],
      discounts: [{ key: "welcome", amount_off: 1500, duration: "once" }],
    };
    const first = rate({ plan, period: NOV, subscriptionStart: NOV.start });
    const second = rate({
      plan,
      period: { start: "2026-12-01T00:00:00Z", end: "2027-01-01T00:00:00Z" },
      subscriptionStart: NOV.start,
    });
    expect(first.total).toBe(3500);
    expect(first.lines[1]).toMatchObject({
      kind: "discount",
      amount: -1500,
      discount: { amount_off: 1500, scope: "plan" },
    });
    expect(second.total).toBe(5000);
  });

  it("applies plan-wide discounts after price discounts, commitment and cap, in order, never below zero", () => {
    const plan: PlanInput = {
      key: "d",
      currency: "usd",
      prices: [
        { key: "fee", type: "flat", unit_amount: 10000 },
        { key: "api", type: "metered", meter: "api", unit_amount: 1 },
      ],
      minimum_commitment: { amount: 20000 },
      discounts: [
        { key: "fee10", percent_off: "10", duration: "forever", applies_to: { price: "fee" } },
        { key: "pct", percent_off: "12.5", duration: "forever" },
        { key: "fixed", amount_off: 50000, duration: "forever" },
      ],
    };
    const invoice = rate({ plan, period: NOV, usage: { api: 1000 } });
    expect(amounts(invoice)).toEqual([
      ["flat:fee", 10000],
      ["discount:fee10", -1000],
      ["usage:api", 1000],
      ["minimum_commitment:", 10000], // 20,000 − (10,000 − 1,000 + 1,000)
      ["discount:pct", -2500], // 12.5% of 20,000
      ["discount:fixed", -17500], // capped at what is left
    ]);
    // Stripe's subtotal: price-level discounts included, plan-level ones not.
    expect(invoice.subtotal).toBe(20000);
    expect(invoice.total).toBe(0);
    expect(sum(invoice.lines)).toBe(invoice.total);
  });

  it("prorates a fixed amount_off over a partial phase", () => {
    const plan: PlanInput = {
      key: "f",
      currency: "usd",
      prices: [{ key: "fee", type: "flat", unit_amount: 9000 }],
      discounts: [{ key: "off", amount_off: 3000, duration: "forever" }],
    };
    const invoice = rate({ plan, period: NOV, subscriptionStart: "2026-11-21T00:00:00Z" });
    expect(amounts(invoice)).toEqual([
      ["flat:fee", 3000],
      ["discount:off", -1000],
    ]);
  });

  it("requires the subscription start for discounts whose duration counts from it", () => {
    const plan: PlanInput = {
      key: "o",
      currency: "usd",
      prices: [{ key: "fee", type: "flat", unit_amount: 5000 }],
      discounts: [{ key: "welcome", amount_off: 1500, duration: "once" }],
    };
    expect(issuesOf(() => rate({ plan, period: NOV }))).toEqual([
      "subscriptionStart: is required: plan o has the once discount welcome, whose duration counts from it",
    ]);
  });
});

describe("input errors name the field", () => {
  it("reports period, seats, usage and change problems together", () => {
    const input: RatingInput = {
      plan: team,
      period: { start: "2026-11-01", end: "2026-12-01T00:00:00Z" },
      usage: {},
    };
    expect(issuesOf(() => rate(input))).toEqual([
      "period.start: must be an ISO 8601 timestamp with a time zone, e.g. 2026-11-01T00:00:00Z",
    ]);
    expect(
      issuesOf(() =>
        rate({
          plan: team,
          period: NOV,
          usage: { api_calls: "-1", apicalls: 5, other: 0.5 },
          changes: [
            { type: "seats", at: "2026-12-05T00:00:00Z", seats: 2 },
            { type: "seats", at: "2026-11-05T00:00:00Z", seats: 2.5 },
          ],
        }),
      ),
    ).toEqual([
      'usage.api_calls: must be a non-negative decimal (a string like "12.5" or an integer)',
      "usage.apicalls: no metered price of plan team uses this meter",
      "usage.other: no metered price of plan team uses this meter",
      "changes[0].at: must be strictly inside the billed time 2026-11-01T00:00:00.000Z – 2026-12-01T00:00:00.000Z",
      "changes[1].seats: must be a non-negative integer seat count",
      "seats: is required: plan team has the seat price seats",
    ]);
  });

  it("refuses a period that is not one billing interval long", () => {
    expect(
      issuesOf(() =>
        rate({ plan: team, period: { start: NOV.start, end: "2027-01-01T00:00:00Z" }, seats: 1 }),
      ),
    ).toEqual([
      "period.end: must be one billing interval (1 month) after period.start, about 2026-12-01T00:00:00.000Z; fees are charged per billing period",
    ]);
  });

  it("reports plan problems under plan.", () => {
    expect(
      issuesOf(() =>
        rate({
          plan: { key: "x", currency: "usd", prices: [{ key: "a", type: "flat" }] },
          period: NOV,
        }),
      ),
    ).toEqual([
      "plan.prices[0].unit_amount: is required (or unit_amount_decimal) when billing_scheme is per_unit",
    ]);
  });

  it("refuses fractional JS numbers, which are binary floats", () => {
    expect(issuesOf(() => rate({ plan: team, period: NOV, seats: 1, usage: { api_calls: 0.1 } }))).toEqual([
      'usage.api_calls: must be a non-negative decimal (a string like "12.5" or an integer)',
    ]);
  });

  it("throws rather than emit an amount that is not a safe integer", () => {
    const plan: PlanInput = {
      key: "big",
      currency: "usd",
      prices: [{ key: "a", type: "metered", meter: "a", unit_amount: 1_000_000 }],
    };
    expect(() => rate({ plan, period: NOV, usage: { a: "100000000000" } })).toThrow(RangeError);
    expect(rate({ plan, period: NOV, usage: { a: "9007199254" } }).total).toBe(9_007_199_254_000_000);
  });
});

describe("purity", () => {
  it("gives the same invoice for the same input, and does not mutate it", () => {
    const input: RatingInput = {
      plan: team,
      period: NOV,
      seats: 3,
      usage: { api_calls: "123456.789" },
      changes: [{ type: "seats", at: "2026-11-20T12:30:00Z", seats: 4 }],
    };
    const snapshot = JSON.stringify(input);
    const a = rate(input);
    const b = rate(input);
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
    expect(JSON.stringify(input)).toBe(snapshot);
  });
});
