import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parseCatalogDocument, type CatalogLookup } from "./document.js";
import { CatalogInputError } from "./file.js";

const example = readFileSync("examples/plan.yaml", "utf8");
const none: CatalogLookup = {
  meter: () => undefined,
  plan: () => undefined,
  customer: () => undefined,
  subscriptions: () => [],
};

const customers = `
customers:
  - key: acme
    name: Acme Inc.
    email: billing@acme.test
    currency: usd
    timezone: Europe/Berlin
    external_ids: { stripe_customer_id: cus_Acme123 }
    metadata: { segment: enterprise }
  - key: "ops@globex.example, team 7 — Zürich"
    currency: usd
`;
const subscriptions = `
subscriptions:
  - key: acme-growth
    customer: acme
    plan: growth
    started_at: 2026-03-01T00:00:00+01:00
    seats: { quantity: 12, schedule: [{ at: 2026-11-16T00:00:00Z, quantity: 20 }] }
`;

/** The issues a document is rejected with, as "path: message". */
function issues(text: string, stored: CatalogLookup = none): string[] {
  try {
    parseCatalogDocument(text, stored);
  } catch (err: unknown) {
    if (err instanceof CatalogInputError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  throw new Error("document was accepted");
}

describe("catalog documents", () => {
  it("takes meters, plans, customers and subscriptions in one file, with defaults", () => {
    const doc = parseCatalogDocument(example + customers + subscriptions, none);
    expect(doc.meters).toHaveLength(6);
    expect(doc.plans?.map((p) => p.key)).toEqual(["growth"]);
    expect(doc.customers?.[1]).toEqual({
      key: "ops@globex.example, team 7 — Zürich",
      currency: "USD",
      timezone: "UTC",
      external_ids: {},
      metadata: {},
    });
    expect(doc.subscriptions?.[0]).toMatchObject({ key: "acme-growth", phases: [], discounts: [] });
  });

  it("names the exact field of every bad value", () => {
    expect(
      issues(`
customers:
  - { key: a, currency: usd, timezone: Mars/Olympus_Mons, email: nope, external_ids: { stripe_customer_id: acct_1 } }
  - { key: a, currency: xyz }
`),
    ).toEqual([
      "customers[0].email: must be an email address",
      'customers[0].timezone: unknown IANA time zone "Mars/Olympus_Mons" (e.g. Europe/Berlin, America/New_York, UTC)',
      "customers[0].external_ids.stripe_customer_id: must be a Stripe customer id (cus_...)",
      'customers[1].currency: unknown ISO 4217 currency code "xyz"',
    ]);
    expect(
      issues(`
subscriptions:
  - key: s
    customer: c
    plan: p
    started_at: 2026-03-01T00:00:00Z
    ended_at: 2026-02-01T00:00:00Z
    phases: [{ at: 2026-04-01T00:00:00Z, plan: q }, { at: 2026-03-15T00:00:00Z, plan: r }]
    seats: {}
    colour: blue
`),
    ).toEqual([
      "subscriptions[0].seats: needs quantity, schedule or meter",
      "subscriptions[0].colour: unknown field",
      "subscriptions[0].ended_at: must be after started_at",
      "subscriptions[0].phases[0].at: must be before ended_at",
      "subscriptions[0].phases[1].at: must be before ended_at",
      "subscriptions[0].phases[1].at: must be after phases[0].at",
    ]);
  });

  it("checks every reference: plans to meters, subscriptions to customers and plans, currencies, intervals, seats", () => {
    const doc =
      example
        .replace("meter: emails_sent", "meter: emails")
        .replace(
          "plans:\n",
          "plans:\n  - { key: yearly, currency: usd, interval: year, prices: [{ key: f, type: flat, unit_amount: 1 }] }\n",
        ) +
      `
customers:
  - { key: eu, currency: eur }
  - { key: us, currency: usd }
subscriptions:
  - { key: s1, customer: eu, plan: growth, started_at: 2026-01-01T00:00:00Z, seats: { quantity: 1 } }
  - { key: s2, customer: nobody, plan: gone, started_at: 2026-01-01T00:00:00Z }
  - { key: s3, customer: us, plan: growth, started_at: 2026-01-01T00:00:00Z }
  - key: s4
    customer: us
    plan: yearly
    started_at: 2026-01-01T00:00:00Z
    phases: [{ at: 2026-06-01T00:00:00Z, plan: growth }]
    seats: { meter: seat_meter }
`;
    expect(issues(doc)).toEqual([
      'plans[1].prices[4].meter: no meter "emails" in this document or the catalog',
      "subscriptions[0].plan: plan growth bills in USD but customer eu is invoiced in EUR (subscription s1)",
      'subscriptions[1].customer: no customer "nobody" in this document or the catalog',
      'subscriptions[1].plan: no plan "gone" in this document or the catalog',
      "subscriptions[2].seats: a plan of this subscription has a seat price: give seats (quantity, schedule or meter)",
      "subscriptions[3].phases[0].plan: plan growth bills every 1 month but the subscription's periods are every 1 year (start a new subscription to change the interval)",
      'subscriptions[3].seats.meter: no meter "seat_meter" in this document or the catalog',
    ]);
  });

  it("refuses a change to a customer or plan that would break a stored subscription, naming the changed field", () => {
    const stored = parseCatalogDocument(example + customers + subscriptions, none);
    const lookup: CatalogLookup = {
      meter: (k) => stored.meters?.find((m) => m.key === k),
      plan: (k) => stored.plans?.find((p) => p.key === k),
      customer: (k) => stored.customers?.find((c) => c.key === k),
      subscriptions: () => stored.subscriptions ?? [],
    };
    expect(issues("customers:\n  - { key: acme, currency: eur, timezone: Europe/Berlin }\n", lookup)).toEqual(
      [
        "customers[0].currency: plan growth bills in USD but customer acme is invoiced in EUR (subscription acme-growth)",
      ],
    );
    // Unrelated changes and new objects referencing stored ones are fine.
    const ok = parseCatalogDocument(
      "customers:\n  - { key: initech, currency: usd }\nsubscriptions:\n  - { key: i1, customer: initech, plan: growth, started_at: 2026-01-01T00:00:00Z, seats: { meter: peak_seats } }\n",
      lookup,
    );
    expect(ok.subscriptions?.[0]?.seats).toEqual({ meter: "peak_seats", schedule: [] });
  });
});
