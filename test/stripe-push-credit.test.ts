import type Stripe from "stripe";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { InvoiceStore } from "../src/billing/index.js";
import { creditNoteId, invoiceId, type Invoice, type InvoiceLine } from "../src/billing/index.js";
import type { CatalogStore } from "../src/catalog/index.js";
import { customerSchema } from "../src/catalog/index.js";
import type { Config } from "../src/config/index.js";
import type { PushStore, StripePusher } from "../src/connectors/stripe/index.js";
import type { PushDeps } from "../src/connectors/stripe/index.js";
import { eventually, guid } from "./helpers.js";
import type { StripeTestServer } from "./stripe-server/index.js";
import { draftInvoice } from "./fixtures/draft-invoice.js";
import { startPushEnv, type PushEnv } from "./stripe-push-setup.js";

/**
 * Tally credit notes pushed as Stripe credit notes, against real NATS and the local Stripe test
 * server through the real SDK. Invoices and credit notes are stored and finalized through
 * InvoiceStore (the close's own store, credit notes in their own `TALLY-CN` series).
 */
const KEY = "sk_test_tally_credit";
let srv: StripeTestServer;
let invoices: InvoiceStore;
let catalog: CatalogStore;
let store: PushStore;
let sdk: Stripe;

const DAY = 86_400_000;
const P0 = Date.UTC(2026, 9, 1);
const iso = (ms: number) => new Date(ms).toISOString();

function line(n: number, amount: number, trueUpOf?: string): InvoiceLine {
  return {
    number: n,
    kind: "usage",
    plan: "daily",
    price: `p${n}`,
    meter: `m${n}`,
    description: `line ${n}`,
    period: { start: iso(P0), end: iso(P0 + DAY) },
    quantity: "1",
    unit_amount_decimal: null,
    amount,
    ...(trueUpOf !== undefined
      ? { true_up: { invoice: trueUpOf, billed_quantity: "2", billed_amount: -amount * 2 } }
      : {}),
  };
}

const doc = draftInvoice;

/** A finalized invoice with these line amounts. */
async function invoice(customer: string, amounts: number[]): Promise<Invoice> {
  const sub = `${customer}-sub-${guid()}`;
  const draft = doc(
    invoiceId(sub, iso(P0)),
    customer,
    sub,
    amounts.map((a, i) => line(i + 1, a)),
  );
  await invoices.putDraft(draft);
  const [inv] = await invoices.finalize([draft.id], "TALLY");
  return inv!;
}

/** A finalized credit note (series TALLY-CN) crediting these [invoice, amount < 0] lines. */
async function creditNote(customer: string, credited: [Invoice, number][]): Promise<Invoice> {
  const sub = credited[0]![0].subscription;
  const draft = doc(
    creditNoteId(`${guid()}`),
    customer,
    sub,
    credited.map(([inv, a], i) => line(i + 1, a, inv.id)),
    {
      kind: "credit_note",
      credits: [...new Set(credited.map(([inv]) => inv.id))],
      issued_with: null,
    },
  );
  await invoices.putDraft(draft);
  const [cn] = await invoices.finalize([draft.id], "TALLY-CN");
  return cn!;
}

async function customer(key: string): Promise<string> {
  const cus = await sdk.customers.create({ name: key });
  await catalog.customers.apply([
    customerSchema.parse({
      key,
      currency: "eur",
      external_ids: { stripe_customer_id: cus.id },
      metadata: {},
    }),
  ]);
  await eventually(() => Promise.resolve(catalog.customers.get(key) !== undefined), 5000, `customer ${key}`);
  return cus.id;
}

function pusher(overrides: Partial<Config["stripe"]> = {}, extra: Partial<PushDeps> = {}): StripePusher {
  return env.pusher(overrides, extra);
}

/** The Stripe credit notes (server state) of a Tally credit note, in creation order. */
function stripeCreditNotesOf(id: string) {
  return [...srv.state.creditNotes.values()].filter((c) => c.metadata.tally_credit_note === id);
}

/** The Stripe invoice ids a Tally invoice was pushed as. */
async function stripeIdsOf(id: string): Promise<string[]> {
  return (await store.get(id))!.parts.map((p) => p.stripe_invoice!);
}

let env: PushEnv;
beforeAll(async () => {
  env = await startPushEnv("stripe-push-credit-test", KEY);
  ({ srv, invoices, catalog, store, sdk } = env);
});
afterAll(async () => {
  await env?.stop();
});
beforeEach(() => {
  srv.faults.clear();
  srv.requests.clear();
});

describe("stripe push of credit notes", () => {
  it("a credit note on a pushed invoice becomes one Stripe credit note: exact amounts, metadata back-links, sent once", async () => {
    await customer("cn-acme");
    const inv = await invoice("cn-acme", [1000, 2000, 3000]);
    expect((await pusher().pushDue({ only: [inv.id] })).pushed).toEqual([inv.id]);
    const [stripeInvoice] = await stripeIdsOf(inv.id);
    const cn = await creditNote("cn-acme", [
      [inv, -1234],
      [inv, -566],
    ]);
    expect(cn.number).toMatch(/^TALLY-CN-\d{6}$/);
    srv.requests.clear();

    const report = await pusher().pushDue({ only: [cn.id] });
    expect(report).toMatchObject({ pushed: [cn.id], failed: [], mismatched: [], waiting: [] });
    const [s, ...more] = stripeCreditNotesOf(cn.id);
    expect(more).toHaveLength(0);
    expect(s).toMatchObject({
      invoice: stripeInvoice,
      amount: 1800,
      type: "pre_payment",
      metadata: {
        tally_credit_note: cn.id,
        tally_number: cn.number,
        tally_invoice: inv.id,
        tally_part: "1",
        tally_parts: "1",
        tally_total: "1800",
      },
    });
    expect(s!.lines.map((l) => [l.type, l.amount, l.quantity, l.metadata])).toEqual([
      ["custom_line_item", 1234, 1, { tally_credit_note: cn.id, tally_line: "1" }],
      ["custom_line_item", 566, 1, { tally_credit_note: cn.id, tally_line: "2" }],
    ]);
    expect(srv.requests.of("POST /v1/credit_notes").map((r) => r.idempotencyKey)).toEqual([
      `tally:${cn.id}:credit_note:1`,
    ]);
    // Stripe's books: the invoice now asks for 6000 − 1800.
    const after = await sdk.invoices.retrieve(stripeInvoice!);
    expect(after.amount_remaining).toBe(6000 - 1800);
    expect(after.pre_payment_credit_notes_amount).toBe(1800);
    expect(await store.get(cn.id)).toMatchObject({
      kind: "credit_note",
      status: "pushed",
      step: "verified",
      expected_total: -1800,
      last_error: null,
      credit_notes: [
        {
          k: 1,
          invoice: inv.id,
          stripe_invoice: stripeInvoice,
          amount: 1800,
          stripe_credit_note: s!.id,
          stripe_total: 1800,
        },
      ],
    });

    // Pushed once: a second run sends nothing.
    srv.requests.clear();
    const again = await pusher().pushDue({ only: [cn.id] });
    expect(again.pushed).toEqual([]);
    expect(srv.requests.count()).toBe(0);
    expect(stripeCreditNotesOf(cn.id)).toHaveLength(1);
  });

  it("a credit note whose invoice is not pushed yet waits (no Stripe request), then goes after the invoice", async () => {
    await customer("cn-wait");
    const inv = await invoice("cn-wait", [5000]);
    const cn = await creditNote("cn-wait", [[inv, -700]]);
    srv.requests.clear();

    const first = await pusher().pushDue({ only: [cn.id] });
    expect(first).toMatchObject({ pushed: [], failed: [], waiting: [cn.id] });
    expect(srv.requests.count()).toBe(0);
    expect(await store.get(cn.id)).toMatchObject({
      status: "pending",
      last_error: { code: "waiting_for_credited_invoice" },
    });
    expect((await store.get(cn.id))!.last_error!.message).toContain(inv.id);

    // One run with both, the credit note named first: the invoice still goes first.
    srv.requests.clear();
    const second = await pusher().pushDue({ only: [cn.id, inv.id] });
    expect(second.pushed.sort()).toEqual([cn.id, inv.id].sort());
    const order = srv.requests.all().map((r) => r.endpoint);
    expect(order.indexOf("POST /v1/credit_notes")).toBeGreaterThan(
      order.indexOf("POST /v1/invoices/:id/finalize"),
    );
    const [s] = stripeCreditNotesOf(cn.id);
    expect(s).toMatchObject({ invoice: (await stripeIdsOf(inv.id))[0], amount: 700 });
    expect(await store.get(cn.id)).toMatchObject({ status: "pushed", last_error: null });
  });

  it("credits on two invoices, one pushed in two parts and one paid: split per Stripe invoice within what each can take; the paid one credits the customer's balance", async () => {
    await customer("cn-split");
    // 4 lines, at most 2 per Stripe invoice: parts of 300 and 700.
    const big = await invoice("cn-split", [100, 200, 300, 400]);
    const paid = await invoice("cn-split", [900]);
    const p = pusher({ maxLinesPerInvoice: 2 });
    expect((await p.pushDue({ only: [big.id, paid.id] })).pushed.sort()).toEqual([big.id, paid.id].sort());
    const [part1, part2] = await stripeIdsOf(big.id);
    const [paidStripe] = await stripeIdsOf(paid.id);
    await sdk.invoices.pay(paidStripe!, { paid_out_of_band: true });

    // 250 + 150 on `big` (part 1 can take 300: line 2 is split 50 / 100), 400 on `paid`.
    const cn = await creditNote("cn-split", [
      [big, -250],
      [big, -150],
      [paid, -400],
    ]);
    srv.requests.clear();
    const report = await p.pushDue({ only: [cn.id] });
    expect(report).toMatchObject({ pushed: [cn.id], failed: [] });
    const notes = stripeCreditNotesOf(cn.id);
    expect(
      notes.map((c) => [c.invoice, c.amount, c.type, c.metadata.tally_part, c.metadata.tally_invoice]),
    ).toEqual([
      [part1, 300, "pre_payment", "1", big.id],
      [part2, 100, "pre_payment", "2", big.id],
      [paidStripe, 400, "post_payment", "3", paid.id],
    ]);
    expect(notes.map((c) => c.lines.map((l) => [l.metadata.tally_line, l.amount]))).toEqual([
      [
        ["1", 250],
        ["2", 50],
      ],
      [["2", 100]],
      [["3", 400]],
    ]);
    // The total check: Stripe's credit notes sum to −Tally's total.
    expect(notes.reduce((s, c) => s + c.amount, 0)).toBe(-cn.total);
    expect(srv.requests.of("POST /v1/credit_notes").map((r) => r.idempotencyKey)).toEqual(
      [1, 2, 3].map((k) => `tally:${cn.id}:credit_note:${k}`),
    );
    expect(srv.requests.of("POST /v1/credit_notes")[2]!.params).toMatchObject({ credit_amount: "400" });
  });

  it("more credit than the Stripe invoice can take is refused whole (push_failed, nothing sent)", async () => {
    await customer("cn-over");
    const inv = await invoice("cn-over", [500]);
    await pusher().pushDue({ only: [inv.id] });
    const cn = await creditNote("cn-over", [[inv, -501]]);
    srv.requests.clear();
    const report = await pusher().pushDue({ only: [cn.id] });
    expect(report.failed).toMatchObject([{ invoice: cn.id, code: "credit_exceeds_invoice" }]);
    expect(srv.requests.count("POST /v1/credit_notes")).toBe(0);
    expect(stripeCreditNotesOf(cn.id)).toHaveLength(0);
  });

  it("the connection dropped after Stripe committed the credit note: the SDK's retry gets the replay; no duplicate", async () => {
    await customer("cn-drop");
    const inv = await invoice("cn-drop", [4000]);
    await pusher().pushDue({ only: [inv.id] });
    const cn = await creditNote("cn-drop", [[inv, -999]]);
    srv.requests.clear();
    srv.faults.drop({ count: 1, endpoint: "POST /v1/credit_notes", when: "after-commit" });
    const report = await pusher().pushDue({ only: [cn.id] });
    expect(report.pushed).toEqual([cn.id]);
    expect(srv.requests.count("POST /v1/credit_notes")).toBe(2);
    expect(stripeCreditNotesOf(cn.id)).toHaveLength(1);
    expect((await sdk.invoices.retrieve((await stripeIdsOf(inv.id))[0]!)).amount_remaining).toBe(4000 - 999);
  });

  it("a crash after Stripe created the credit note, before it was recorded, and keys expired: the retry finds it by listing; no duplicate", async () => {
    await customer("cn-crash");
    const inv = await invoice("cn-crash", [3000]);
    await pusher().pushDue({ only: [inv.id] });
    const cn = await creditNote("cn-crash", [[inv, -1200]]);
    const crashing = pusher(
      {},
      {
        crashPoint: (point) => {
          if (point === "credit_note:1") throw new Error("simulated crash after the credit note create");
        },
      },
    );
    const r1 = await crashing.pushOne(cn.id);
    expect(r1).toMatchObject({ status: "push_failed" });
    expect(r1!.credit_notes![0]!.stripe_credit_note).toBeNull();
    expect(stripeCreditNotesOf(cn.id)).toHaveLength(1);
    srv.clock.advance(25 * 3_600_000); // keys pruned: a replay could no longer save us
    srv.requests.clear();
    const report = await pusher().pushDue({ only: [cn.id], force: true });
    expect(report.pushed).toEqual([cn.id]);
    expect(srv.requests.count("GET /v1/credit_notes")).toBe(1);
    expect(srv.requests.count("POST /v1/credit_notes")).toBe(0);
    expect(stripeCreditNotesOf(cn.id)).toHaveLength(1);
    expect((await store.get(cn.id))!.credit_notes![0]!.stripe_credit_note).toBe(
      stripeCreditNotesOf(cn.id)[0]!.id,
    );
  });

  it("a credit note recorded 'skipped' by the earlier push (credit notes not pushed yet) is pushed now", async () => {
    await customer("cn-legacy");
    const inv = await invoice("cn-legacy", [2500]);
    await pusher().pushDue({ only: [inv.id] });
    const cn = await creditNote("cn-legacy", [[inv, -300]]);
    const at = new Date().toISOString();
    await store.update(cn.id, () => ({
      invoice: cn.id,
      number: cn.number,
      customer: cn.customer,
      stripe_customer: null,
      currency: cn.currency,
      expected_total: cn.total,
      collection: null,
      step: "none",
      status: "skipped",
      parts: [],
      attempts: 0,
      last_error: null,
      next_attempt_at: null,
      skip_reason: "credit notes are not pushed to Stripe yet",
      created_at: at,
      updated_at: at,
      pushed_at: null,
    }));
    const report = await pusher().pushDue({ only: [cn.id] });
    expect(report.pushed).toEqual([cn.id]);
    expect(stripeCreditNotesOf(cn.id).map((c) => c.amount)).toEqual([300]);
  });
});
