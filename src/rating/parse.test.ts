import { describe, it, expect } from "vitest";
import { RatingInputError } from "./errors.js";
import { parseCatalog, parseSubscription, parseUsage, selectPlan } from "./parse.js";
import { rate } from "./rate.js";

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof RatingInputError)
      return err.issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message));
    throw err;
  }
  throw new Error("expected a RatingInputError");
}

const CATALOG = `
meters:            # belongs to the metering side of the catalog; ignored by rating
  - key: api_calls
    aggregation: count
plans:
  - key: pro
    name: Pro
    currency: usd
    prices:
      - key: api
        type: metered
        meter: api_calls
        billing_scheme: tiered
        tiers_mode: graduated
        tiers:
          - up_to: 1000
            unit_amount: 0
          - up_to: inf
            unit_amount_decimal: 0.05
      - key: storage
        type: metered
        meter: storage_gb
        unit_amount_decimal: "2.3"
        included_quantity: 10.5
`;

describe("parseCatalog", () => {
  it("reads plans next to other catalog sections, keeping YAML numbers exact", () => {
    const catalog = parseCatalog(CATALOG);
    const pro = selectPlan(catalog);
    expect(pro.key).toBe("pro");
    expect(pro.currency).toBe("USD");
    expect(pro.interval).toBe("month");
    expect(pro.prices[0]!.tiers![1]!.unit_amount_decimal).toBe("0.05");
    expect(pro.prices[1]!.included_quantity).toBe("10.5");
  });

  it("keeps digits a binary float would lose", () => {
    const plan = selectPlan(
      parseCatalog(`
key: p
currency: usd
prices:
  - key: a
    type: metered
    meter: a
    unit_amount_decimal: 0.100000000001
`),
    );
    expect(plan.prices[0]!.unit_amount_decimal).toBe("0.100000000001");
    const usage = parseUsage('{ "a": 12345678901234567890 }');
    expect(usage).toEqual({ a: "12345678901234567890" });
    const invoice = rate({
      plan,
      period: { start: "2026-11-01T00:00:00Z", end: "2026-12-01T00:00:00Z" },
      usage: parseUsage('{ "a": 1000000000000 }'),
    });
    // 10^12 × 0.100000000001 = 100,000,000,001 exactly (in binary floating point: 100000000001.00002).
    expect(invoice.total).toBe(100_000_000_001);
  });

  it("accepts a single plan at the top level", () => {
    const catalog = parseCatalog(
      "key: solo\ncurrency: eur\nprices:\n  - { key: fee, type: flat, unit_amount: 900 }\n",
    );
    expect(catalog.plans.map((p) => p.key)).toEqual(["solo"]);
  });

  it("names the exact path of a tier that is out of order", () => {
    const yaml = CATALOG.replace(
      "- up_to: inf",
      "- up_to: 500\n            unit_amount: 1\n          - up_to: inf",
    );
    expect(issuesOf(() => parseCatalog(yaml))).toEqual([
      "plans[0].prices[0].tiers[1].up_to: must be greater than the previous tier's up_to (1000)",
    ]);
  });

  it("reports every bad field at once, including unknown fields (typos)", () => {
    const yaml = `
plans:
  - key: p
    currency: usd
    prices:
      - key: a
        type: metered
        meter: a
        unit_ammount: 5
      - key: b
        type: metered
        unit_amount: 5
        unit_amount_decimal: "5"
      - key: c
        type: seat
        billing_scheme: tiered
        tiers_mode: volume
        tiers:
          - up_to: inf
            unit_amount: 1
          - up_to: 10
            unit_amount: 1
      - key: d
        type: flat
        unit_amount_decimal: 0.1234567890123
`;
    expect(issuesOf(() => parseCatalog(yaml))).toEqual([
      "plans[0].prices[0].unit_ammount: unknown field",
      "plans[0].prices[0].unit_amount: is required (or unit_amount_decimal) when billing_scheme is per_unit",
      "plans[0].prices[1].meter: is required for a metered price",
      "plans[0].prices[1].unit_amount_decimal: set only one of unit_amount and unit_amount_decimal",
      "plans[0].prices[2].tiers[0].up_to: only the last tier can be inf",
      "plans[0].prices[2].tiers[1].up_to: the last tier must have up_to: inf (or null) so every quantity is priced",
      'plans[0].prices[3].unit_amount_decimal: must be a non-negative decimal with at most 12 decimal places (a string like "0.05" or an integer), got "0.1234567890123"',
    ]);
  });

  it("validates types, enums, currencies and cross references", () => {
    const yaml = `
plans:
  - key: p
    currency: usx
    interval: fortnight
    prices:
      - key: a
        type: metered
        meter: a
        unit_amount: -5
      - key: a
        type: flat
        unit_amount: 1.5
    discounts:
      - key: d
        percent_off: 120
        duration: repeating
        applies_to: { price: nope }
`;
    expect(issuesOf(() => parseCatalog(yaml))).toEqual([
      'plans[0].currency: unknown ISO 4217 currency code "usx"',
      "plans[0].interval: must be one of day, week, month, year",
      'plans[0].prices[0].unit_amount: must be a non-negative integer, got "-5"',
      'plans[0].prices[1].unit_amount: must be a non-negative integer, got "1.5" (for fractions of a minor unit use the _decimal field, e.g. unit_amount_decimal)',
      'plans[0].discounts[0].percent_off: must be at most 100, got "120"',
    ]);
  });

  it("checks plan-level cross references once fields are valid", () => {
    const yaml = `
plans:
  - key: p
    currency: usd
    prices:
      - { key: a, type: flat, unit_amount: 1 }
      - { key: a, type: flat, unit_amount: 2, recurring: { interval: year } }
    discounts:
      - { key: d, percent_off: 10, duration: repeating, applies_to: { price: nope } }
  - key: p
    currency: usd
    prices: []
`;
    expect(issuesOf(() => parseCatalog(yaml))).toEqual([
      "plans[0].discounts[0].duration_in_periods: a repeating discount needs exactly one of duration_in_months and duration_in_periods",
      "plans[0].prices[1].key: duplicate price key (also prices[0])",
      "plans[0].prices[1].recurring.interval: must match the plan interval month",
      'plans[0].discounts[0].applies_to.price: no price with key "nope" in this plan',
      "plans[1].prices: needs at least one price",
      "plans[1].key: duplicate plan key (also plans[0])",
    ]);
  });

  it("explains a document that is not a catalog, and YAML syntax errors with their line", () => {
    expect(issuesOf(() => parseCatalog("- just\n- a list\n"))).toEqual([
      "expected a map with a plans: list, or a single plan",
    ]);
    expect(issuesOf(() => parseCatalog("meters: []\n"))).toEqual([
      "plans: is required (or write a single plan with key, currency and prices at the top level)",
    ]);
    const [syntax] = issuesOf(() => parseCatalog("plans:\n  - key: [unclosed\n"));
    expect(syntax).toMatch(/^invalid YAML\/JSON: .+ at line \d+, column \d+$/);
  });
});

describe("selectPlan", () => {
  it("needs a key when the catalog has several plans", () => {
    const two = parseCatalog(
      "plans:\n  - { key: a, currency: usd, prices: [{ key: f, type: flat, unit_amount: 1 }] }\n  - { key: b, currency: usd, prices: [{ key: f, type: flat, unit_amount: 1 }] }\n",
    );
    expect(issuesOf(() => selectPlan(two))).toEqual(["plans: holds several plans (a, b); choose one by key"]);
    expect(selectPlan(two, "b").key).toBe("b");
    expect(issuesOf(() => selectPlan(two, "c"))).toEqual(['plans: no plan with key "c" (have: a, b)']);
  });
});

describe("parseUsage", () => {
  it("reads JSON numbers and strings exactly", () => {
    expect(parseUsage('{\n\t"api_calls": 1250000,\n\t"storage_gb": "12.50", "x": 0.1\n}')).toEqual({
      api_calls: "1250000",
      storage_gb: "12.5",
      x: "0.1",
    });
  });

  it("names the bad entry", () => {
    expect(issuesOf(() => parseUsage('{ "api_calls": -3, "b": "lots", "c": 1e3, "d": true }'))).toEqual([
      'api_calls: must be a non-negative decimal (a string like "0.05" or an integer), got "-3"',
      'b: must be a non-negative decimal (a string like "0.05" or an integer), got "lots"',
      'c: must be a non-negative decimal (a string like "0.05" or an integer), got "1e3"',
      'd: must be a non-negative decimal (a string like "0.05" or an integer)',
    ]);
    expect(issuesOf(() => parseUsage("[1, 2]"))).toEqual([
      "must be an object mapping meter keys to quantities",
    ]);
    expect(issuesOf(() => parseUsage('{ "a": 1, "a": 2 }'))[0]).toMatch(/unique/);
  });
});

describe("parseSubscription", () => {
  it("reads the subscription timeline", () => {
    const sub = parseSubscription(`{
      "started_at": "2026-01-15T00:00:00Z",
      "seats": 5,
      "changes": [
        { "at": "2026-11-16T00:00:00Z", "seats": 8 },
        { "at": "2026-11-20T00:00:00Z", "plan": "scale", "usage": { "api_calls": 10 } }
      ]
    }`);
    expect(sub).toEqual({
      started_at: "2026-01-15T00:00:00Z",
      seats: "5",
      changes: [
        { at: "2026-11-16T00:00:00Z", seats: "8" },
        { at: "2026-11-20T00:00:00Z", plan: "scale", usage: { api_calls: "10" } },
      ],
    });
  });

  it("names bad fields", () => {
    expect(
      issuesOf(() => parseSubscription('{ "started_at": "2026-01-15", "seats": 1.5, "seat": 2 }')),
    ).toEqual([
      "started_at: must be an ISO 8601 timestamp with a time zone, e.g. 2026-11-01T00:00:00Z",
      'seats: must be a non-negative integer, got "1.5"',
      "seat: unknown field",
    ]);
  });
});
