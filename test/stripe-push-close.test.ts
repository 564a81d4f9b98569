import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Invoice } from "../src/billing/index.js";
import type { Config } from "../src/config/index.js";
import { startClose, type RunningClose } from "../src/runtime/close.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import {
  get,
  log,
  post,
  startTestEdge,
  startTestSink,
  testConfig,
  applyCatalog,
  closeUntilFinalized,
} from "./helpers.js";
import { signEvent, startStripeServer, type StripeTestServer } from "./stripe-server/index.js";

/**
 * The close role with TALLY_STRIPE_SECRET_KEY set: invoices finalized by the real close (events
 * through the edge, sink, ClickHouse) are pushed after each round; `GET /v1/invoices/:id` shows
 * the push; Stripe's webhooks flow back through `POST /v1/webhooks/stripe`.
 */
const KEY = "sk_test_tally_close_push";
const WEBHOOK_SECRET = "whsec_tally_test_secret_0123456789";
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY;
const P1 = D - 2 * DAY;
const P2 = D - DAY;
const iso = (ms: number) => new Date(ms).toISOString();

let srv: StripeTestServer;
let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;
let close: RunningClose;
let stripeCustomer: string;
let betaCustomer: string;
const pushed: Invoice[] = [];

beforeAll(async () => {
  srv = await startStripeServer({ port: 0 });
  const sdk = new Stripe(KEY, { host: srv.host, port: srv.port, protocol: "http" });
  stripeCustomer = (await sdk.customers.create({ name: "Acme" })).id;
  betaCustomer = (await sdk.customers.create({ name: "Beta" })).id;
  // The grace puts the first period's cutoff a few seconds from now: the events posted below
  // are received before it (and the second period is not due yet).
  config = testConfig({
    TALLY_STRIPE_SECRET_KEY: KEY,
    TALLY_STRIPE_API_BASE: srv.url,
    TALLY_STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    TALLY_CLOSE_GRACE: `${Math.ceil((Date.now() - P2) / 1000) + 4}s`,
  });
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
  const applied = await applyCatalog(
    edge,
    `
meters:
  - { key: calls, event_type: api_call, aggregation: count }
plans:
  - key: daily
    currency: usd
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: 100 }
      - { key: calls, type: metered, meter: calls, unit_amount_decimal: "0.35" }
customers:
  - { key: acme, currency: usd, external_ids: { stripe_customer_id: ${stripeCustomer} } }
  - { key: beta, currency: usd, external_ids: { stripe_customer_id: ${betaCustomer} } }
subscriptions:
  - { key: acme-daily, customer: acme, plan: daily, started_at: "${iso(P1)}" }
  - { key: beta-daily, customer: beta, plan: daily, started_at: "${iso(P1)}" }
`,
  );
  expect(applied.status).toBe(200);
  close = await startClose(config, log, false);
});
afterAll(async () => {
  await close?.stop();
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
  await srv?.stop();
});

const calls = (prefix: string, n: number, atMs: number, customer = "acme") =>
  Array.from({ length: n }, (_, i) => ({
    id: `${prefix}-${i}`,
    type: "api_call",
    customer,
    time: iso(atMs + i * 1000),
  }));

describe("the close role pushes what it finalized", () => {
  it("each finalized invoice becomes one Stripe invoice equal to the minor unit; GET /v1/invoices/:id shows it", async () => {
    expect(
      (await post(edge, [...calls("a", 37, P1 + 3600_000), ...calls("b", 11, P1 + 60_000, "beta")])).status,
    ).toBe(202);
    const finalized = await closeUntilFinalized(close, 2);
    expect(finalized).toHaveLength(2);
    for (const id of finalized) {
      const inv = (await close.invoices.get(id))!;
      pushed.push(inv);
      const stripe = [...srv.state.invoices.values()].filter((s) => s.metadata.tally_invoice === id);
      expect(stripe).toHaveLength(1);
      const s = stripe[0]!;
      expect(s).toMatchObject({
        customer: inv.customer === "acme" ? stripeCustomer : betaCustomer,
        status: "open",
        currency: "usd",
      });
      expect(s.lines.map((l) => [Number(l.metadata.tally_line), l.amount])).toEqual(
        inv.lines.map((l) => [l.number, l.amount]),
      );
      expect(s.lines.reduce((a, l) => a + l.amount, 0)).toBe(inv.total);
      const usage = inv.lines.find((l) => l.snapshot !== undefined)!;
      expect(s.lines.find((l) => l.metadata.tally_line === String(usage.number))!.metadata).toMatchObject({
        meter: "calls",
        id_digest: usage.snapshot!.id_digest,
      });

      const r = await get(edge, `/v1/invoices/${id}`);
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({
        id,
        status: "finalized",
        push: {
          stripe: {
            status: "pushed",
            step: "verified",
            invoice_ids: [s.id],
            last_error: null,
            parts: [{ stripe_total: inv.total, expected_total: inv.total, stripe_status: "open" }],
          },
        },
      });
    }
    // 37 calls × 0.35 = 12.95 → 13, 11 × 0.35 = 3.85 → 4: Stripe holds Tally's rounded amounts.
    expect(pushed.map((i) => i.total).sort()).toEqual([100 + 13, 100 + 4].sort());
  });
});

describe("POST /v1/webhooks/stripe", () => {
  const deliver = (event: unknown, secret = WEBHOOK_SECRET, t = Math.floor(Date.now() / 1000)) => {
    const { payload, header } = signEvent(event, secret, t);
    return edge.app.request("/v1/webhooks/stripe", {
      method: "POST",
      headers: { "content-type": "application/json", "stripe-signature": header },
      body: payload,
    });
  };
  const stripeIdOf = (inv: Invoice) =>
    [...srv.state.invoices.values()].find((s) => s.metadata.tally_invoice === inv.id)!.id;
  const payments = async (inv: Invoice) =>
    (await get(edge, `/v1/invoices/${inv.id}`)).body.push.stripe.payments as {
      status: string;
      event: string;
    }[];

  it("records invoice.paid with a good signature; a duplicate delivery is recognised", async () => {
    const inv = pushed[0]!;
    const paid = srv.state.eventFor("invoice.paid", stripeIdOf(inv));
    const r = await deliver(paid);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ received: true, outcome: "applied" });
    expect(await payments(inv)).toMatchObject([{ status: "paid", event: paid.id }]);
    const again = await deliver(paid);
    expect(await again.json()).toEqual({ received: true, outcome: "duplicate" });
    expect(await payments(inv)).toMatchObject([{ status: "paid", event: paid.id }]);
  });

  it("an older payment_failed delivered after paid does not regress it; a later state of higher rank applies", async () => {
    const inv = pushed[0]!;
    const failed = { ...srv.state.eventFor("invoice.payment_failed", stripeIdOf(inv)) };
    failed.created -= 3600;
    expect(await (await deliver(failed)).json()).toEqual({ received: true, outcome: "stale" });
    expect(await payments(inv)).toMatchObject([{ status: "paid" }]);

    // The other invoice: payment_failed, then (out of order) an older event of the same rank, then uncollectible.
    const other = pushed[1]!;
    const f2 = srv.state.eventFor("invoice.payment_failed", stripeIdOf(other));
    expect(await (await deliver(f2)).json()).toMatchObject({ outcome: "applied" });
    const older = { ...f2, id: `${f2.id}_older`, created: f2.created - 10 };
    expect(await (await deliver(older)).json()).toMatchObject({ outcome: "stale" });
    expect(await payments(other)).toMatchObject([{ status: "payment_failed", event: f2.id }]);
    const unc = { ...srv.state.eventFor("invoice.marked_uncollectible", stripeIdOf(other)), id: "evt_unc_1" };
    expect(await (await deliver(unc)).json()).toMatchObject({ outcome: "applied" });
    const voided = { ...srv.state.eventFor("invoice.voided", stripeIdOf(other)), id: "evt_void_1" };
    expect(await (await deliver(voided)).json()).toMatchObject({ outcome: "applied" });
    expect(await payments(other)).toMatchObject([{ status: "void", event: "evt_void_1" }]);
  });

  it("a bad signature is a 400 and records nothing; so is a missing one; a stale timestamp too", async () => {
    const inv = pushed[1]!;
    const before = await payments(inv);
    const evt = { ...srv.state.eventFor("invoice.paid", stripeIdOf(inv)), id: "evt_forged" };
    const forged = await deliver(evt, "whsec_wrong_secret");
    expect(forged.status).toBe(400);
    expect(((await forged.json()) as any).error.details.errors[0]).toMatchObject({
      code: "invalid_signature",
    });
    const old = await deliver(evt, WEBHOOK_SECRET, Math.floor(Date.now() / 1000) - 3600);
    expect(old.status).toBe(400);
    const unsigned = await edge.app.request("/v1/webhooks/stripe", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(evt),
    });
    expect(unsigned.status).toBe(400);
    // A signed body altered afterwards.
    const { payload, header } = signEvent(evt, WEBHOOK_SECRET, Math.floor(Date.now() / 1000));
    const tampered = await edge.app.request("/v1/webhooks/stripe", {
      method: "POST",
      headers: { "content-type": "application/json", "stripe-signature": header },
      body: payload.replace('"invoice.paid"', '"invoice.voided"'),
    });
    expect(tampered.status).toBe(400);
    expect(await payments(inv)).toEqual(before);
  });

  it("refuses bodies over the limit before reading them; ignores events of invoices Tally did not push", async () => {
    const big = await edge.app.request("/v1/webhooks/stripe", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "stripe-signature": "t=1,v1=00",
        "content-length": "10000000",
      },
      body: "x".repeat(1000),
    });
    expect(big.status).toBe(413);
    const sdk = new Stripe(KEY, { host: srv.host, port: srv.port, protocol: "http" });
    const foreign = await sdk.invoices.create({ customer: stripeCustomer });
    const evt = srv.state.eventFor("invoice.voided", foreign.id);
    expect(await (await deliver(evt)).json()).toEqual({ received: true, outcome: "ignored" });
  });
});
