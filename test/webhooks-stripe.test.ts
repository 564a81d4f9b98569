import Stripe from "stripe";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { startClose, type RunningClose } from "../src/runtime/close.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { eventually, log, startTestEdge, startTestSink, testConfig, applyCatalog } from "./helpers.js";
import { signEvent, startStripeServer, type StripeTestServer } from "./stripe-server/index.js";
import { createEndpoint, Receiver, verify, webhookEnv } from "./webhooks-setup.js";

/*
 * The close role (startClose: its close, Stripe push and dispatcher) and the edge's Stripe webhook
 * route raise invoice.finalized, invoice.pushed, invoice.push_failed and invoice.paid, each
 * delivered signed to a real receiver. A customer whose Stripe id does not exist on the local
 * Stripe server makes its push fail.
 */
const KEY = "sk_test_tally_webhooks";
const STRIPE_WEBHOOK_SECRET = "whsec_tally_test_secret_webhooks_0123";
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY;
const P1 = D - DAY;
const iso = (ms: number) => new Date(ms).toISOString();

let srv: StripeTestServer;
let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;
let close: RunningClose;
let receiver: Receiver;

beforeAll(async () => {
  srv = await startStripeServer({ port: 0 });
  const sdk = new Stripe(KEY, { host: srv.host, port: srv.port, protocol: "http" });
  const acme = (await sdk.customers.create({ name: "Acme" })).id;
  config = testConfig({
    ...webhookEnv,
    TALLY_STRIPE_SECRET_KEY: KEY,
    TALLY_STRIPE_API_BASE: srv.url,
    TALLY_STRIPE_WEBHOOK_SECRET: STRIPE_WEBHOOK_SECRET,
    TALLY_CLOSE_GRACE: "1s",
  });
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
  const applied = await applyCatalog(
    edge,
    `
plans:
  - { key: daily, currency: usd, interval: day, prices: [{ key: base, type: flat, unit_amount: 700 }] }
customers:
  - { key: acme, currency: usd, external_ids: { stripe_customer_id: ${acme} } }
  - { key: ghost, currency: usd, external_ids: { stripe_customer_id: cus_doesnotexist } }
subscriptions:
  - { key: acme-daily, customer: acme, plan: daily, started_at: "${iso(P1)}" }
  - { key: ghost-daily, customer: ghost, plan: daily, started_at: "${iso(P1)}" }
`,
  );
  expect(applied.status).toBe(200);
  close = await startClose(config, log, false);
  receiver = await Receiver.start();
});
afterAll(async () => {
  await close?.stop();
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
  await srv?.stop();
  await receiver?.stop();
});

it("finalized, pushed, push_failed from the close role and paid from Stripe's webhook, each signed", async () => {
  const ep = await createEndpoint(edge, receiver.url);
  const finalized: string[] = [];
  for (let round = 0; round < 40 && finalized.length < 2; round++) {
    finalized.push(...((await close.runOnce({ waitMs: 5000 }))?.finalized ?? []));
    if (finalized.length < 2) await new Promise((r) => setTimeout(r, 250));
  }
  expect(finalized).toHaveLength(2);
  const invs = await Promise.all(finalized.map(async (id) => (await close.invoices.get(id))!));
  const acme = invs.find((i) => i.customer === "acme")!;
  const ghost = invs.find((i) => i.customer === "ghost")!;
  await receiver.waitFor(4);
  const byType = () => {
    const m = new Map<string, { id: string; data: any }[]>();
    for (const q of receiver.requests) {
      const p = verify(ep.secret, q);
      m.set(p.type, [...(m.get(p.type) ?? []), { id: String(q.headers["webhook-id"]), data: p.data }]);
    }
    return m;
  };
  let got = byType();
  expect(
    got
      .get("invoice.finalized")!
      .map((e) => e.data.id)
      .sort(),
  ).toEqual([acme.id, ghost.id].sort());
  expect(got.get("invoice.pushed")).toEqual([
    {
      id: `evt_invoice_pushed_${acme.id}`,
      data: expect.objectContaining({ invoice: expect.objectContaining({ id: acme.id, total: 700 }) }),
    },
  ]);
  const failed = got.get("invoice.push_failed")!;
  expect(failed).toHaveLength(1);
  expect(failed[0]!.data).toMatchObject({ invoice: { id: ghost.id }, attempt: 1 });
  expect(failed[0]!.data.error.code).toEqual(expect.any(String));

  // Stripe says the invoice is paid: invoice.paid once, however often Stripe redelivers.
  const stripeId = [...srv.state.invoices.values()].find((s) => s.metadata.tally_invoice === acme.id)!.id;
  const paid = srv.state.eventFor("invoice.paid", stripeId);
  for (let i = 0; i < 2; i++) {
    const { payload, header } = signEvent(paid, STRIPE_WEBHOOK_SECRET, Math.floor(Date.now() / 1000));
    const r = await edge.app.request("/v1/webhooks/stripe", {
      method: "POST",
      headers: { "content-type": "application/json", "stripe-signature": header },
      body: payload,
    });
    expect(r.status).toBe(200);
  }
  await eventually(() => Promise.resolve((byType().get("invoice.paid")?.length ?? 0) >= 1));
  await new Promise((r) => setTimeout(r, 800));
  got = byType();
  expect(got.get("invoice.paid")).toEqual([
    {
      id: `evt_invoice_paid_${acme.id}`,
      data: { invoice: acme.id, stripe: [{ stripe_invoice: stripeId, event: paid.id }] },
    },
  ]);
});
