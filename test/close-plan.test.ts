import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, get } from "./helpers.js";
import { calls, DAY, HOUR, iso, startCloseEnv, today, type CloseEnv } from "./close-setup.js";

/*
 * Plan and currency changes between two invoices. Daily periods P1 [D-2d, D-1d), P2 [D-1d, D).
 * - acme on plan `daily`: v1 (100 flat, 2 per call) bills P1; v2 (200 flat, 3 per call) is
 *   applied before P2; late calls of P1 are trued up on P2's invoice at v1's prices.
 * - cur on plan `eu`: customer and plan switch from USD to EUR together after P1 was invoiced
 *   (a customer's currency alone cannot change: the stored subscription would mismatch); late
 *   usage of the USD invoice cannot go on a EUR invoice: a per-subscription error.
 */
const D = today();
const P1 = D - 2 * DAY;
const P2 = D - DAY;
let env: CloseEnv;

const plan = (key: string, currency: string, flat: number, perCall: number) => `
  - key: ${key}
    currency: ${currency}
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: ${flat} }
      - { key: calls, type: metered, meter: calls, unit_amount: ${perCall} }`;

beforeAll(async () => {
  env = await startCloseEnv(`
meters:
  - { key: calls, event_type: api_call, aggregation: count }
plans:${plan("daily", "usd", 100, 2)}${plan("eu", "usd", 100, 2)}
customers:
  - { key: acme, currency: usd, timezone: UTC }
  - { key: cur, currency: usd, timezone: UTC }
subscriptions:
  - { key: acme-daily, customer: acme, plan: daily, started_at: "${iso(P1)}" }
  - { key: cur-daily, customer: cur, plan: eu, started_at: "${iso(P1)}" }
`);
});
afterAll(async () => {
  await env?.stop();
});

describe("plan and currency changes between invoices", () => {
  let second: Awaited<ReturnType<CloseEnv["closeThrough"]>>;

  it("rejects a customer whose currency differs from the plan's: 400 naming the field, nothing stored", async () => {
    const bad = await env.apply(`
customers:
  - { key: newco, currency: eur, timezone: UTC }
subscriptions:
  - { key: newco-daily, customer: newco, plan: daily, started_at: "${iso(P1)}" }
`);
    expect(bad.status).toBe(400);
    expect(bad.body.error.details.errors).toEqual([
      {
        field: "subscriptions[0].plan",
        code: "invalid",
        message: "plan daily bills in USD but customer newco is invoiced in EUR (subscription newco-daily)",
      },
    ]);
    expect((await get(env.edge, "/v1/customers/newco")).status).toBe(404);
    expect((await get(env.edge, "/v1/subscriptions/newco-daily")).status).toBe(404);

    // A stored subscription's customer cannot change currency alone either.
    const alone = await env.apply(`customers:\n  - { key: cur, currency: eur, timezone: UTC }`);
    expect(alone.status).toBe(400);
    expect(alone.body.error.details.errors.map((e: { field: string }) => e.field)).toEqual([
      "customers[0].currency",
    ]);
    expect(env.deps.catalog.customers.get("cur")?.currency).toBe("USD");
  });

  it("trues up a period on the next invoice at the plan version it was billed under", async () => {
    await env.send([
      ...calls("a1", "acme", 10, P1 + HOUR),
      ...calls("a2", "acme", 5, P2 + HOUR),
      ...calls("c1", "cur", 10, P1 + HOUR),
    ]);
    const first = await env.closeThrough(P2);
    expect(first.errors).toEqual([]);
    expect(first.finalized).toHaveLength(2);
    const [p1] = await env.documents("acme-daily");
    expect(p1).toMatchObject({ total: 100 + 10 * 2, plans: [{ key: "daily", version: 1 }] });

    const changed = await env.apply(`plans:${plan("daily", "usd", 200, 3)}`);
    expect(changed.status).toBe(200);
    expect(changed.body.plans).toEqual([{ key: "daily", outcome: "updated", version: 2 }]);
    // cur and its plan move from USD to EUR together (valid), after P1 was invoiced in USD.
    const moved = await env.apply(`
plans:${plan("eu", "eur", 100, 2)}
customers:
  - { key: cur, currency: eur, timezone: UTC }
`);
    expect(moved.status, JSON.stringify(moved.body)).toBe(200);
    await env.send([
      ...calls("a-late", "acme", 4, P1 + 2 * HOUR),
      ...calls("c-late", "cur", 3, P1 + 2 * HOUR),
    ]);
    await eventually(
      async () =>
        (await env.usage("calls", "acme", P1, P2)) === "14" &&
        (await env.usage("calls", "cur", P1, P2)) === "13",
      30_000,
      "late calls",
    );

    second = await env.closeThrough(D);
    expect(second.errors.filter((e) => e.subscription !== "cur-daily")).toEqual([]);
    const [, p2] = await env.documents("acme-daily");
    expect(p2).toMatchObject({ status: "finalized", plans: [{ key: "daily", version: 2 }] });
    expect(p2!.lines.map((l) => [l.price, l.quantity, l.amount, l.period.start])).toEqual([
      ["base", "1", 200, iso(P2)], // v2
      ["calls", "5", 15, iso(P2)], // v2: 5 × 3
      ["calls", "14", 8, iso(P1)], // P1 at v1: (14 − 10) × 2, not × 3
    ]);
    expect(p2!.total).toBe(200 + 15 + 8);
    expect(await env.deps.invoices.get(p1!.id)).toEqual(p1);
  });

  it("reports late usage of an invoice in the customer's former currency as that subscription's error", async () => {
    expect(second.errors).toEqual([
      {
        subscription: "cur-daily",
        message: expect.stringMatching(
          /^late usage of invoice inv_\w+ \(USD\) cannot be billed on a EUR invoice/,
        ),
      },
    ]);
    const docs = await env.documents("cur-daily");
    expect(docs.map((d) => [d.currency, d.status, d.total])).toEqual([["USD", "finalized", 120]]);
  });
});
