import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { evaluateThresholds, startDispatcher, type WebhookDispatcher } from "../src/webhooks/index.js";
import { eventually, log } from "./helpers.js";
import { calls, iso, startCloseEnv, today, type CloseEnv } from "./close-setup.js";
import { createEndpoint, Receiver, verify, webhookEnv } from "./webhooks-setup.js";

/*
 * usage.threshold_crossed: a subscription's `usage_alerts` (80 % and 100 % of the included
 * quantity, a spend of 1.10 USD) evaluated through the close's upcoming-invoice path (real usage
 * in ClickHouse, read by queryUsage), each crossing delivered once per period and threshold
 * however often the evaluation runs.
 */
const D = today();
let env: CloseEnv;
let dispatcher: WebhookDispatcher;
let receiver: Receiver;

const catalog = (alerts: string) => `
meters:
  - { key: calls, event_type: api_call, aggregation: count }
plans:
  - key: daily
    currency: usd
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: 100 }
      - { key: calls, type: metered, meter: calls, unit_amount: 2, included_quantity: 10 }
customers:
  - { key: acme, currency: usd, timezone: UTC }
subscriptions:
  - key: acme-daily
    customer: acme
    plan: daily
    started_at: "${iso(D)}"
    usage_alerts: ${alerts}
`;

beforeAll(async () => {
  env = await startCloseEnv(catalog(`{ included_percent: [80, 100], spend: ["1.10"] }`), webhookEnv);
  dispatcher = await startDispatcher(env.edge.nc.jetstream(), env.edge.webhooks, env.config, log);
  receiver = await Receiver.start();
});
afterAll(async () => {
  await dispatcher?.stop();
  await env?.stop();
  await receiver?.stop();
});

const evaluate = () =>
  evaluateThresholds(
    { close: env.deps, emitter: env.edge.webhooks.emitter, deliveries: env.edge.webhooks.deliveries },
    Date.now(),
  );

/** Evaluates until `n` crossings fired in total (usage becomes countable within a second or so). */
async function evaluateUntil(fired: string[], n: number): Promise<void> {
  await eventually(async () => {
    const r = await evaluate();
    expect(r.errors).toEqual([]);
    fired.push(...r.fired);
    return fired.length >= n;
  }, 20_000);
}

describe("usage.threshold_crossed", () => {
  it("fires each crossed threshold once per period, however often it is evaluated", async () => {
    const ep = await createEndpoint(env.edge, receiver.url, ["usage.threshold_crossed"]);
    const now = Date.now();
    // 9 of 10 included calls: 80 % crossed, 100 % and the spend not.
    await env.send(calls("a", "acme", 9, Math.max(D, now - 60_000)));
    await eventually(async () => (await env.usage("calls", "acme", D, Date.now() + 1000)) === "9");
    const fired: string[] = [];
    await evaluateUntil(fired, 1);
    expect((await evaluate()).fired).toEqual([]);
    expect((await evaluate()).fired).toEqual([]);
    await receiver.waitFor(1);
    const first = verify(ep.secret, receiver.requests[0]!);
    expect(first.type).toBe("usage.threshold_crossed");
    expect(first.data).toMatchObject({
      customer: "acme",
      subscription: "acme-daily",
      period: { start: iso(D), end: iso(D + 86_400_000) },
      threshold: {
        kind: "included_quantity",
        percent: 80,
        price: "calls",
        meter: "calls",
        included_quantity: "10",
        quantity: "9",
      },
    });

    // 16 calls: 100 % crossed; 6 billable x 2 + 100 = 112 minor units >= 1.10 USD.
    await env.send(calls("b", "acme", 7, Math.max(D, now - 30_000)));
    await eventually(async () => (await env.usage("calls", "acme", D, Date.now() + 1000)) === "16");
    await evaluateUntil(fired, 3);
    expect((await evaluate()).fired).toEqual([]);
    expect(fired).toHaveLength(3);
    expect(new Set(fired).size).toBe(3);
    await receiver.waitFor(3);
    await new Promise((r) => setTimeout(r, 800));
    expect(receiver.requests).toHaveLength(3);
    const kinds = receiver.requests.map((q) => verify(ep.secret, q).data.threshold);
    expect(kinds).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: "included_quantity", percent: 80 }),
        expect.objectContaining({ kind: "included_quantity", percent: 100, quantity: "16" }),
        expect.objectContaining({ kind: "spend", amount: "1.1", amount_minor: 110 }),
      ]),
    );
  });

  it("refuses bad usage_alerts in the catalog with errors naming the field", async () => {
    const r = await env.apply(catalog(`{ included_percent: [80, 80, 0.5], spend: ["-1"], extra: 1 }`));
    expect(r.status).toBe(400);
    const fields = (r.body.error.details.errors as { field: string }[]).map((e) => e.field);
    expect(fields).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/subscriptions.*0.*usage_alerts.*included_percent.*2/),
        expect.stringMatching(/subscriptions.*0.*usage_alerts.*spend.*0/),
        expect.stringMatching(/subscriptions.*0.*usage_alerts.*extra/),
      ]),
    );
    const empty = await env.apply(catalog(`{}`));
    expect(empty.status).toBe(400);
    expect(JSON.stringify(empty.body.error.details.errors)).toMatch(/usage_alerts/);
  });
});
