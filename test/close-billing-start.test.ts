import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { calls, DAY, HOUR, iso, service, startCloseEnv, today, type CloseEnv } from "./close-setup.js";

/*
 * A subscription that started 30 days ago and was billed elsewhere until D-2d+12h
 * (`billing_starts_at`): the first close invoices none of the 28 periods before, and bills the
 * period holding the billing start from it (daily plan: 2400 flat, 2 per call).
 */
const D = today();
const START = D - 2 * DAY + 12 * HOUR;
let env: CloseEnv;

beforeAll(async () => {
  env = await startCloseEnv(`
meters:
  - { key: calls, event_type: api_call, aggregation: count }
plans:
  - key: daily
    currency: usd
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: 2400 }
      - { key: calls, type: metered, meter: calls, unit_amount: 2 }
customers:
  - { key: acme, currency: usd, timezone: UTC }
subscriptions:
  - key: acme-daily
    customer: acme
    plan: daily
    started_at: "${iso(D - 30 * DAY)}"
    billing_starts_at: "${iso(START)}"
`);
});
afterAll(async () => {
  await env?.stop();
});

describe("billing_starts_at", () => {
  it("invoices no period ending at or before it and bills the period it falls in from it", async () => {
    await env.send([
      ...calls("old", "acme", 5, D - 3 * DAY + HOUR), // billed elsewhere
      ...calls("before", "acme", 3, D - 2 * DAY + HOUR), // same period, before the billing start
      ...calls("after", "acme", 4, D - 2 * DAY + 13 * HOUR),
      ...calls("next", "acme", 6, D - DAY + HOUR),
    ]);
    const first = await env.closeThrough(D - DAY);
    expect(first.errors).toEqual([]);
    expect(first.finalized).toHaveLength(1);
    const second = await env.closeThrough(D);
    expect(second.errors).toEqual([]);
    expect(second.finalized).toHaveLength(1);
    const docs = await env.documents("acme-daily");
    expect(docs.map((d) => [service(d), d.number, d.total])).toEqual([
      // 2400 × 12/24 + 4 × 2
      [[iso(START), iso(D - DAY)], "TALLY-000001", 1200 + 8],
      [[iso(D - DAY), iso(D)], "TALLY-000002", 2400 + 12],
    ]);
    expect(docs[0]!.lines.find((l) => l.price === "calls")?.quantity).toBe(
      await env.usage("calls", "acme", START, D - DAY),
    );
  });

  it("is validated in the catalog: an ISO instant at or after started_at (400 naming the field, nothing stored)", async () => {
    const sub = (extra: string) => `
subscriptions:
  - { key: other, customer: acme, plan: daily, started_at: "${iso(D - 30 * DAY)}", ${extra} }
`;
    const early = await env.apply(sub(`billing_starts_at: "${iso(D - 31 * DAY)}"`));
    expect(early.status).toBe(400);
    expect(early.body.error.details.errors).toEqual([
      {
        field: "subscriptions[0].billing_starts_at",
        code: "invalid",
        message: "must be at or after started_at",
      },
    ]);
    const notInstant = await env.apply(sub(`billing_starts_at: "2026-11-01"`));
    expect(notInstant.status).toBe(400);
    expect(notInstant.body.error.details.errors.map((e: { field: string }) => e.field)).toEqual([
      "subscriptions[0].billing_starts_at",
    ]);
    const afterEnd = await env.apply(
      sub(`ended_at: "${iso(D - 20 * DAY)}", billing_starts_at: "${iso(D - 10 * DAY)}"`),
    );
    expect(afterEnd.status).toBe(400);
    expect(env.deps.catalog.subscriptions.get("other")).toBeUndefined();
  });
});
