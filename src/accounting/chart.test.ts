import { describe, expect, it } from "vitest";
import {
  CatalogInputError,
  parseCatalogDocument,
  type Accounts,
  type CatalogLookup,
} from "../catalog/index.js";
import type { Plan } from "../rating/index.js";

/*
 * The catalog's `accounts:` section, validated with the rest of the document (pure): the
 * messages name the field and the reason, and a rejected document applies nothing.
 */
const plans = `
meters:
  - { key: calls, event_type: api_call, aggregation: count }
plans:
  - key: pro
    currency: usd
    prices:
      - { key: base, type: flat, unit_amount: 4900 }
      - { key: calls, type: metered, meter: calls, unit_amount: 1 }
    minimum_commitment: { amount: 10000 }
`;
const chart = `
accounts:
  receivable: "1200"
  cash: "1000"
  deferred_revenue: "2400"
  discounts: "4900"
  minimum_commitment: "4050"
  prices:
    - { plan: pro, price: base, account: "4000" }
    - { plan: pro, price: calls, account: "4010" }
`;

function lookup(stored: { plans?: Plan[]; accounts?: Accounts } = {}): CatalogLookup {
  return {
    meter: (k) => (k === "calls" ? ({ key: "calls" } as never) : undefined),
    plan: (k) => stored.plans?.find((p) => p.key === k),
    customer: () => undefined,
    subscriptions: () => [],
    plans: () => stored.plans ?? [],
    accounts: () => stored.accounts,
  };
}

function issues(text: string, stored = lookup()): string[] {
  try {
    parseCatalogDocument(text, stored);
  } catch (err: unknown) {
    if (err instanceof CatalogInputError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  return [];
}

describe("accounts: section", () => {
  it("accepts a chart mapping every price (no default revenue account) and keeps documents without one working", () => {
    expect(issues(plans + chart)).toEqual([]);
    expect(issues(plans)).toEqual([]);
    const doc = parseCatalogDocument(plans + chart, lookup());
    expect(doc.accounts).toMatchObject({
      receivable: "1200",
      prices: [
        { plan: "pro", price: "base", account: "4000" },
        { plan: "pro", price: "calls", account: "4010" },
      ],
    });
  });

  it("names each unmapped price of the document's plans, the commitment without an account, and bad codes", () => {
    expect(issues(plans + chart.replace(/ {4}- \{ plan: pro, price: calls.*\n/, ""))).toEqual([
      "plans[0].prices[1]: price calls of plan pro has no revenue account: map it in accounts.prices or set accounts.revenue",
    ]);
    expect(issues(plans + chart.replace('  minimum_commitment: "4050"\n', ""))).toEqual([
      "plans[0].minimum_commitment: plan pro has a minimum commitment but the chart has no accounts.minimum_commitment or accounts.revenue",
    ]);
    expect(issues(plans + chart.replace('receivable: "1200"', 'receivable: "12 00"'))).toEqual([
      "accounts.receivable: must be 1 to 10 of A-Z a-z 0-9 . _ - (Xero's account code limit)",
    ]);
    expect(issues(plans + chart.replace('  cash: "1000"\n', ""))[0]).toMatch(/^accounts\.cash: /);
    expect(issues(`${plans + chart}    - { plan: pro, price: base, account: "4001" }\n`)).toEqual([
      "accounts.prices[2]: maps plan pro price base again (first at prices[0])",
    ]);
  });

  it("a mapping naming an unknown plan or price is an error", () => {
    expect(issues(`${plans + chart}    - { plan: nope, price: base, account: "4001" }\n`)).toEqual([
      'accounts.prices[2].plan: no plan "nope" in this document or the catalog',
    ]);
    expect(issues(`${plans + chart}    - { plan: pro, price: seats, account: "4001" }\n`)).toEqual([
      'accounts.prices[2].price: plan pro has no price "seats"',
    ]);
  });

  it("checks stored plans against a new chart, and a later plan against the stored chart", () => {
    const stored = parseCatalogDocument(plans + chart, lookup());
    const withPlans = lookup({ plans: stored.plans! });
    // A chart alone, leaving a stored price unmapped: blamed on the chart.
    expect(issues(chart.replace(/ {4}- \{ plan: pro, price: base.*\n/, ""), withPlans)).toEqual([
      "accounts.prices: price base of plan pro has no revenue account: map it in accounts.prices or set accounts.revenue",
    ]);
    const withChart = lookup({ plans: stored.plans!, accounts: stored.accounts! });
    expect(
      issues(
        `plans:\n  - { key: extra, currency: usd, prices: [{ key: base, type: flat, unit_amount: 5 }] }\n`,
        withChart,
      ),
    ).toEqual([
      "plans[0].prices[0]: price base of plan extra has no revenue account: map it in accounts.prices or set accounts.revenue",
    ]);
    // With a default revenue account, an unmapped price goes there.
    const defaulted = lookup({ plans: stored.plans!, accounts: { ...stored.accounts!, revenue: "4000" } });
    expect(
      issues(
        `plans:\n  - { key: extra, currency: usd, prices: [{ key: base, type: flat, unit_amount: 5 }] }\n`,
        defaulted,
      ),
    ).toEqual([]);
  });
});
