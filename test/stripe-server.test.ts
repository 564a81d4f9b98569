import Stripe from "stripe";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { signEvent, startStripeServer, type StripeTestServer } from "./stripe-server/index.js";

/**
 * The local Stripe test server, driven only through the real `stripe` SDK (the version pinned in
 * package.json), so what passes here is what the SDK sends and how it reads the answers.
 */
const KEY = "sk_test_tally_local";
let srv: StripeTestServer;

const client = (opts: { maxNetworkRetries?: number; key?: string } = {}) =>
  new Stripe(opts.key ?? KEY, {
    host: srv.host,
    port: srv.port,
    protocol: "http",
    maxNetworkRetries: opts.maxNetworkRetries ?? 0,
  });

beforeAll(async () => {
  srv = await startStripeServer({ port: 0 });
});
afterAll(async () => {
  await srv.stop();
});
beforeEach(() => {
  srv.faults.clear();
  srv.requests.clear();
});

const newDraft = async (stripe: Stripe, tallyInvoice: string, opts: Stripe.RequestOptions = {}) => {
  const customer = await stripe.customers.create({ name: "Acme", email: "billing@acme.test" });
  const invoice = await stripe.invoices.create(
    {
      customer: customer.id,
      auto_advance: false,
      collection_method: "send_invoice",
      days_until_due: 30,
      pending_invoice_items_behavior: "exclude",
      currency: "eur",
      description: `Tally invoice ${tallyInvoice}`,
      metadata: { tally_invoice: tallyInvoice },
    },
    opts,
  );
  return { customer, invoice };
};

/** Tally-like lines: integer minor units (some negative: credits), a service period, metadata back-links. */
const makeLines = (n: number, from = 0): Stripe.InvoiceAddLinesParams.Line[] =>
  Array.from({ length: n }, (_, k) => {
    const i = from + k;
    return {
      amount: i % 17 === 0 ? -(i + 1) : 1000 + ((i * 7919) % 9973),
      description: `meter api_calls line ${i + 1}`,
      period: { start: 1_767_225_600, end: 1_769_903_999 },
      metadata: { tally_invoice: "inv_600", tally_line: String(i + 1), meter: "api_calls" },
    };
  });

describe("invoices: create → add_lines → finalize", () => {
  it("a 600-line invoice goes in as 250 + 250 + 100; the 251st line on one invoice is refused; totals equal the sum", async () => {
    const stripe = client();
    const { invoice } = await newDraft(stripe, "inv_600");
    expect(invoice).toMatchObject({
      status: "draft",
      auto_advance: false,
      currency: "eur",
      number: null,
      total: 0,
    });

    // One call with 251 lines: refused whole (nothing added).
    const tooMany = await stripe.invoices
      .addLines(invoice.id, { lines: makeLines(251) })
      .catch((e: unknown) => e);
    expect(tooMany).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(tooMany).toMatchObject({ statusCode: 400, type: "StripeInvalidRequestError", param: "lines" });
    expect((await stripe.invoices.retrieve(invoice.id)).lines.data).toHaveLength(0);

    const lines = makeLines(600);
    const expected = lines.reduce((s, l) => s + l.amount!, 0);
    await stripe.invoices.addLines(invoice.id, { lines: lines.slice(0, 250) });
    // The invoice is full: one more line on it is refused, and it stays at 250.
    const full = await stripe.invoices
      .addLines(invoice.id, { lines: lines.slice(250, 251) })
      .catch((e: unknown) => e);
    expect(full).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(srv.state.invoices.get(invoice.id)!.lines).toHaveLength(250);

    // So 600 lines need three invoices of ≤ 250 (here: the first, plus two more for the same Tally invoice).
    const { invoice: second } = await newDraft(stripe, "inv_600");
    const { invoice: third } = await newDraft(stripe, "inv_600");
    await stripe.invoices.addLines(second.id, { lines: lines.slice(250, 500) });
    await stripe.invoices.addLines(third.id, { lines: lines.slice(500, 600) });

    const finals = await Promise.all(
      [invoice, second, third].map((i) => stripe.invoices.finalizeInvoice(i.id)),
    );
    for (const f of finals) {
      expect(f.status).toBe("open");
      expect(f.number).toMatch(/^[A-Z0-9]+-0001$/);
      expect(f.due_date).toBe(f.status_transitions.finalized_at! + 30 * 86_400);
      expect(f.amount_due).toBe(f.total);
    }
    expect(finals.reduce((s, f) => s + f.total, 0)).toBe(expected);

    // Read back through the paginated line list: every line, in order, with its metadata and period.
    const back = await stripe.invoices
      .listLineItems(invoice.id, { limit: 100 })
      .autoPagingToArray({ limit: 1000 });
    expect(back).toHaveLength(250);
    expect(back.map((l) => l.metadata.tally_line)).toEqual(
      Array.from({ length: 250 }, (_, i) => String(i + 1)),
    );
    expect(back.reduce((s, l) => s + l.amount, 0)).toBe(finals[0]!.total);
    expect(back[0]).toMatchObject({
      object: "line_item",
      currency: "eur",
      invoice: invoice.id,
      period: { start: 1_767_225_600 },
    });
    const retrieved = await stripe.invoices.retrieve(invoice.id);
    expect(retrieved.lines).toMatchObject({ has_more: true, url: `/v1/invoices/${invoice.id}/lines` });
    expect(retrieved.lines.data).toHaveLength(10);

    // A finalized invoice takes no more lines.
    const closed = await stripe.invoices
      .addLines(invoice.id, { lines: makeLines(1) })
      .catch((e: unknown) => e);
    expect(closed).toMatchObject({ statusCode: 400, code: "invoice_not_editable" });
  });

  it("an amount due under the currency's minimum charge is marked paid at finalization and moved to the customer balance", async () => {
    const stripe = client();
    const { customer, invoice } = await newDraft(stripe, "inv_tiny");
    await stripe.invoices.addLines(invoice.id, { lines: [{ amount: 30, description: "tiny" }] });
    const fin = await stripe.invoices.finalizeInvoice(invoice.id);
    expect(fin.status).toBe("paid");
    expect((await stripe.customers.retrieve(customer.id)) as Stripe.Customer).toMatchObject({ balance: 30 });
  });

  it("price_data lines: amount = unit × quantity; a currency other than the invoice's is refused", async () => {
    const stripe = client();
    const { invoice } = await newDraft(stripe, "inv_pd");
    const after = await stripe.invoices.addLines(invoice.id, {
      lines: [{ price_data: { currency: "eur", product: "prod_x", unit_amount: 250 }, quantity: 3 }],
    });
    expect(after.total).toBe(750);
    const wrong = await stripe.invoices
      .addLines(invoice.id, {
        lines: [{ price_data: { currency: "usd", product: "prod_x", unit_amount: 1 } }],
      })
      .catch((e: unknown) => e);
    expect(wrong).toMatchObject({ statusCode: 400, param: "lines[0][price_data][currency]" });
  });

  it("lifecycle: pay, void, mark_uncollectible follow the documented transitions; a draft cannot be voided", async () => {
    const stripe = client();
    const { invoice } = await newDraft(stripe, "inv_life");
    const draftVoid = await stripe.invoices.voidInvoice(invoice.id).catch((e: unknown) => e);
    expect(draftVoid).toMatchObject({ statusCode: 400 });
    await stripe.invoices.addLines(invoice.id, { lines: makeLines(3) });
    const open = await stripe.invoices.finalizeInvoice(invoice.id);
    const unc = await stripe.invoices.markUncollectible(open.id);
    expect(unc.status).toBe("uncollectible");
    const paid = await stripe.invoices.pay(open.id, { paid_out_of_band: true });
    expect(paid).toMatchObject({ status: "paid", amount_paid: open.total, amount_remaining: 0 });
    const again = await stripe.invoices.voidInvoice(open.id).catch((e: unknown) => e);
    expect(again).toMatchObject({ statusCode: 400 });
    expect(
      srv.state.events.filter((e) => (e.data.object as { id: string }).id === open.id).map((e) => e.type),
    ).toEqual(["invoice.created", "invoice.finalized", "invoice.marked_uncollectible", "invoice.paid"]);
  });

  it("credit notes: before payment they reduce amount_due; listed per invoice", async () => {
    const stripe = client();
    const { invoice } = await newDraft(stripe, "inv_cn");
    await stripe.invoices.addLines(invoice.id, { lines: [{ amount: 5000, description: "usage" }] });
    const open = await stripe.invoices.finalizeInvoice(invoice.id);
    const lineId = open.lines.data[0]!.id;
    const cn = await stripe.creditNotes.create({
      invoice: open.id,
      lines: [{ type: "invoice_line_item", invoice_line_item: lineId, amount: 1200 }],
      reason: "order_change",
      metadata: { tally_credit_note: "cn_1" },
    });
    expect(cn).toMatchObject({
      object: "credit_note",
      type: "pre_payment",
      total: 1200,
      invoice: open.id,
      status: "issued",
    });
    expect((await stripe.invoices.retrieve(open.id)).amount_due).toBe(3800);
    const tooMuch = await stripe.creditNotes
      .create({ invoice: open.id, amount: 3801 })
      .catch((e: unknown) => e);
    expect(tooMuch).toMatchObject({ statusCode: 400, param: "amount" });
    const list = await stripe.creditNotes.list({ invoice: open.id });
    expect(list.data.map((c) => c.id)).toEqual([cn.id]);
  });
});

describe("idempotency (https://docs.stripe.com/idempotency)", () => {
  it("a replay with the same key returns the first response and creates nothing", async () => {
    const stripe = client();
    const customer = await stripe.customers.create({ name: "Replay" });
    const params: Stripe.InvoiceCreateParams = {
      customer: customer.id,
      auto_advance: false,
      metadata: { tally_invoice: "inv_replay" },
    };
    const before = srv.state.invoices.size;
    const first = await stripe.invoices.create(params, { idempotencyKey: "tally:inv_replay:create" });
    const second = await stripe.invoices.create(params, { idempotencyKey: "tally:inv_replay:create" });
    expect(second.id).toBe(first.id);
    expect(second).toEqual(first);
    expect(srv.state.invoices.size).toBe(before + 1);
    expect(second.lastResponse.headers["idempotent-replayed"]).toBe("true");
    const creates = srv.requests.of("POST /v1/invoices");
    expect(creates.map((r) => [r.idempotencyKey, r.replayed, r.status])).toEqual([
      ["tally:inv_replay:create", false, 200],
      ["tally:inv_replay:create", true, 200],
    ]);
  });

  it("the same key with other parameters is a 400 idempotency_error (StripeIdempotencyError); nothing is created", async () => {
    const stripe = client();
    const customer = await stripe.customers.create({ name: "Mismatch" });
    await stripe.invoices.create(
      { customer: customer.id, metadata: { tally_invoice: "a" } },
      { idempotencyKey: "k-mismatch" },
    );
    const before = srv.state.invoices.size;
    const err = await stripe.invoices
      .create({ customer: customer.id, metadata: { tally_invoice: "b" } }, { idempotencyKey: "k-mismatch" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect(err).toMatchObject({ statusCode: 400, rawType: "idempotency_error" });
    expect(srv.state.invoices.size).toBe(before);
  });

  it("a request whose key is still in flight gets 409; the SDK's own retry then receives the replay", async () => {
    const customer = await client().customers.create({ name: "Concurrent" });
    const params = { customer: customer.id, metadata: { tally_invoice: "inv_conc" } };
    srv.faults.latency({ ms: 400, endpoint: "POST /v1/invoices", count: 1 });
    const before = srv.state.invoices.size;
    const noRetry = client({ maxNetworkRetries: 0 });
    const [a, b] = await Promise.allSettled([
      noRetry.invoices.create(params, { idempotencyKey: "k-conc" }),
      new Promise((r) => setTimeout(r, 50)).then(() =>
        noRetry.invoices.create(params, { idempotencyKey: "k-conc" }),
      ),
    ]);
    expect(a.status).toBe("fulfilled");
    expect(b.status).toBe("rejected");
    const conflict = (b as PromiseRejectedResult).reason as Stripe.errors.StripeError;
    // stripe-node maps a 409 to StripeAPIError (Error.js: not 400/401/402/403/404/429).
    expect(conflict).toBeInstanceOf(Stripe.errors.StripeAPIError);
    expect(conflict).toMatchObject({ statusCode: 409, code: "idempotency_key_in_use" });
    expect(srv.state.invoices.size).toBe(before + 1);

    // With retries on, stripe-node retries a 409 (RequestSender._shouldRetry) and gets the saved result.
    srv.faults.latency({ ms: 300, endpoint: "POST /v1/invoices", count: 1 });
    const retrying = client({ maxNetworkRetries: 2 });
    const [c, d] = await Promise.all([
      retrying.invoices.create({ ...params, description: "x" }, { idempotencyKey: "k-conc-2" }),
      new Promise((r) => setTimeout(r, 50)).then(() =>
        retrying.invoices.create({ ...params, description: "x" }, { idempotencyKey: "k-conc-2" }),
      ),
    ]);
    expect(d.id).toBe(c.id);
    // Arrival order: the first (answered 200 after its latency), the 409, then the SDK's retry (replay).
    expect(
      srv.requests
        .of("POST /v1/invoices")
        .filter((r) => r.idempotencyKey === "k-conc-2")
        .map((r) => [r.status, r.replayed]),
    ).toEqual([
      [200, false],
      [409, false],
      [200, true],
    ]);
    expect(srv.state.invoices.size).toBe(before + 2);
  });

  it("keys expire after 24 h: the same key then runs a new request", async () => {
    const stripe = client();
    const customer = await stripe.customers.create({ name: "Expiry" });
    const params = { customer: customer.id };
    const first = await stripe.invoices.create(params, { idempotencyKey: "k-expiry" });
    srv.clock.advance(23 * 3_600_000);
    expect((await stripe.invoices.create(params, { idempotencyKey: "k-expiry" })).id).toBe(first.id);
    srv.clock.advance(3_600_000);
    expect((await stripe.invoices.create(params, { idempotencyKey: "k-expiry" })).id).not.toBe(first.id);
  });

  it("a 400 from execution is saved and replayed; a parameter-validation 400 is not saved", async () => {
    const stripe = client();
    const { invoice } = await newDraft(stripe, "inv_400");
    await stripe.invoices.finalizeInvoice(invoice.id);
    const key = { idempotencyKey: "k-400" };
    const e1 = await stripe.invoices
      .addLines(invoice.id, { lines: makeLines(1) }, key)
      .catch((e: unknown) => e);
    const e2 = await stripe.invoices
      .addLines(invoice.id, { lines: makeLines(1) }, key)
      .catch((e: unknown) => e);
    expect(e1).toMatchObject({ statusCode: 400, code: "invoice_not_editable" });
    expect(e2).toMatchObject({ statusCode: 400, code: "invoice_not_editable" });
    expect(srv.requests.of("POST /v1/invoices/:id/add_lines").map((r) => r.replayed)).toEqual([false, true]);

    const bad = await stripe.invoices
      .create({ customer: "cus_nope" }, { idempotencyKey: "k-val" })
      .catch((e: unknown) => e);
    expect(bad).toMatchObject({ statusCode: 400, code: "resource_missing", param: "customer" });

    // A parameter that fails validation saves nothing: the corrected request may reuse the key.
    const customer = await stripe.customers.create({});
    const typo = await stripe.invoices
      .create({ customer: customer.id, colour: "red" } as Stripe.InvoiceCreateParams, {
        idempotencyKey: "k-typo",
      })
      .catch((e: unknown) => e);
    expect(typo).toMatchObject({ statusCode: 400, code: "parameter_unknown" });
    const fixed = await stripe.invoices.create({ customer: customer.id }, { idempotencyKey: "k-typo" });
    expect(fixed.lastResponse.headers["idempotent-replayed"]).toBeUndefined();
    expect(srv.state.invoices.has(fixed.id)).toBe(true);
  });
});

describe("faults: 429, 5xx, rate limit, crash after commit", () => {
  it("rate-limit 429s (no Stripe-Should-Retry) are not retried by stripe-node: one attempt, StripeRateLimitError", async () => {
    const stripe = client({ maxNetworkRetries: 3 });
    const customer = await stripe.customers.create({ name: "RL" });
    const before = srv.state.invoices.size;
    srv.faults.inject429({ count: 5, endpoint: "POST /v1/invoices", retryAfterSec: 1 });
    const err = await stripe.invoices.create({ customer: customer.id }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
    expect((err as Stripe.errors.StripeError).headers?.["retry-after"]).toBe("1");
    expect(srv.requests.count("POST /v1/invoices")).toBe(1);
    expect(srv.state.invoices.size).toBe(before);
  });

  it("a 429 storm marked Stripe-Should-Retry is retried with the same idempotency key; exactly one invoice", async () => {
    const stripe = client({ maxNetworkRetries: 4 });
    const customer = await stripe.customers.create({ name: "Storm" });
    const before = srv.state.invoices.size;
    srv.faults.inject429({ count: 3, endpoint: "POST /v1/invoices", reason: "lock_timeout" });
    const inv = await stripe.invoices.create({
      customer: customer.id,
      metadata: { tally_invoice: "inv_storm" },
    });
    expect(srv.state.invoices.size).toBe(before + 1);
    const attempts = srv.requests.of("POST /v1/invoices");
    expect(attempts.map((r) => r.status)).toEqual([429, 429, 429, 200]);
    // stripe-node keys every v1 POST (`stripe-node-retry-<uuid>`) and reuses the key on its retries.
    const keys = new Set(attempts.map((r) => r.idempotencyKey));
    expect(keys.size).toBe(1);
    expect([...keys][0]).toMatch(/^stripe-node-retry-/);
    expect(inv.metadata).toEqual({ tally_invoice: "inv_storm" });

    // With our own key, the retries carry ours.
    srv.requests.clear();
    srv.faults.inject429({ count: 2, endpoint: "POST /v1/invoices", reason: "lock_timeout" });
    await stripe.invoices.create({ customer: customer.id }, { idempotencyKey: "tally:inv_storm2:create" });
    expect(srv.requests.of("POST /v1/invoices").map((r) => r.idempotencyKey)).toEqual(
      Array(3).fill("tally:inv_storm2:create"),
    );
  });

  it("503 in front of the API is retried and runs once; a saved 500 is replayed to a retry with the same key", async () => {
    const stripe = client({ maxNetworkRetries: 2 });
    const customer = await stripe.customers.create({ name: "5xx" });
    const before = srv.state.invoices.size;
    srv.faults.inject5xx({ count: 1, status: 503, endpoint: "POST /v1/invoices" });
    await stripe.invoices.create({ customer: customer.id });
    expect(srv.requests.of("POST /v1/invoices").map((r) => r.status)).toEqual([503, 200]);
    expect(srv.state.invoices.size).toBe(before + 1);

    srv.requests.clear();
    srv.faults.inject5xx({
      count: 1,
      status: 500,
      stage: "saved",
      shouldRetry: true,
      endpoint: "POST /v1/invoices",
    });
    const err = await stripe.invoices
      .create({ customer: customer.id }, { idempotencyKey: "k-500" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeAPIError);
    expect(srv.requests.of("POST /v1/invoices").map((r) => [r.status, r.replayed])).toEqual([
      [500, false],
      [500, true],
      [500, true],
    ]);
    expect(srv.state.invoices.size).toBe(before + 1);
  });

  it("the rate limiter answers 429 past N requests per second", async () => {
    const stripe = client();
    const { invoice } = await newDraft(stripe, "inv_rl");
    srv.faults.rateLimit({ perSecond: 5, scope: "endpoint" });
    const results = await Promise.allSettled(
      Array.from({ length: 12 }, () => stripe.invoices.retrieve(invoice.id)),
    );
    const limited = results.filter((r) => r.status === "rejected");
    expect(results.length - limited.length).toBe(5);
    for (const r of limited) expect(r.reason).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
    // Other endpoints have their own budget.
    await stripe.invoices.listLineItems(invoice.id);
  });

  it("crash after commit: the invoice exists, the connection dies; stripe-node retries the reset with its key and gets the replay", async () => {
    const stripe = client({ maxNetworkRetries: 0 });
    const customer = await stripe.customers.create({ name: "Crash" });
    const before = srv.state.invoices.size;
    srv.faults.drop({ count: 1, when: "after-commit", endpoint: "POST /v1/invoices" });
    const inv = await stripe.invoices.create({
      customer: customer.id,
      metadata: { tally_invoice: "inv_crash" },
    });
    expect(srv.state.invoices.size).toBe(before + 1);
    const attempts = srv.requests.of("POST /v1/invoices");
    expect(attempts.map((r) => [r.status, r.replayed, r.fault])).toEqual([
      [undefined, false, "crash-after-commit"],
      [200, true, undefined],
    ]);
    expect(attempts[1]!.idempotencyKey).toBe(attempts[0]!.idempotencyKey);
    expect(srv.state.invoices.has(inv.id)).toBe(true);

    // Twice in a row: the SDK's one reconnect retry is spent; the caller sees a connection error
    // although the invoice was created — the push must recover by key or by search.
    srv.faults.drop({ count: 2, when: "after-commit", endpoint: "POST /v1/invoices" });
    const lost = await stripe.invoices
      .create(
        { customer: customer.id, metadata: { tally_invoice: "inv_crash2" } },
        { idempotencyKey: "k-crash2" },
      )
      .catch((e: unknown) => e);
    expect(lost).toBeInstanceOf(Stripe.errors.StripeConnectionError);
    expect(srv.state.invoices.size).toBe(before + 2);
    const recovered = await stripe.invoices.create(
      { customer: customer.id, metadata: { tally_invoice: "inv_crash2" } },
      { idempotencyKey: "k-crash2" },
    );
    expect(recovered.metadata).toEqual({ tally_invoice: "inv_crash2" });
    expect(srv.state.invoices.size).toBe(before + 2);
  });
});

describe("search, errors, webhooks", () => {
  it("search by metadata finds the invoice (documented query syntax); a bad query is a 400 on `query`", async () => {
    const stripe = client();
    const { invoice } = await newDraft(stripe, "inv_search_1");
    await newDraft(stripe, "inv_search_2");
    const hit = await stripe.invoices.search({ query: "metadata['tally_invoice']:'inv_search_1'" });
    expect(hit.object).toBe("search_result");
    expect(hit.data.map((i) => i.id)).toEqual([invoice.id]);
    const both = await stripe.invoices.search({
      query: `metadata["tally_invoice"]:"inv_search_1" OR metadata["tally_invoice"]:"inv_search_2"`,
    });
    expect(both.data).toHaveLength(2);
    const combined = await stripe.invoices.search({
      query: `metadata['tally_invoice']:'inv_search_1' status:'draft' -currency:'usd'`,
    });
    expect(combined.data.map((i) => i.id)).toEqual([invoice.id]);
    const bad = await stripe.invoices
      .search({ query: "metadata['a']:'x' AND b:'y' OR c:'z'" })
      .catch((e: unknown) => e);
    expect(bad).toMatchObject({ statusCode: 400, param: "query" });
  });

  it("search is eventually consistent when searchLagMs is set (Stripe: searchable in under a minute)", async () => {
    const lagged = await startStripeServer({ searchLagMs: 60_000 });
    try {
      const stripe = new Stripe(KEY, { host: lagged.host, port: lagged.port, protocol: "http" });
      const customer = await stripe.customers.create({});
      const inv = await stripe.invoices.create({ customer: customer.id, metadata: { tally_invoice: "lag" } });
      const q = { query: "metadata['tally_invoice']:'lag'" };
      expect((await stripe.invoices.search(q)).data).toHaveLength(0);
      // The list API is read-after-write consistent.
      expect((await stripe.invoices.list({ customer: customer.id })).data.map((i) => i.id)).toEqual([inv.id]);
      lagged.clock.advance(60_000);
      expect((await stripe.invoices.search(q)).data.map((i) => i.id)).toEqual([inv.id]);
    } finally {
      await lagged.stop();
    }
  });

  it("error shapes map to the SDK's error classes", async () => {
    const stripe = client();
    const noSuch = await stripe.invoices.retrieve("in_missing").catch((e: unknown) => e);
    expect(noSuch).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(noSuch).toMatchObject({
      statusCode: 404,
      code: "resource_missing",
      rawType: "invalid_request_error",
    });
    const unknownParam = await stripe.invoices
      .create({ customer: "cus_x", colour: "red" } as Stripe.InvoiceCreateParams)
      .catch((e: unknown) => e);
    expect(unknownParam).toMatchObject({ statusCode: 400, code: "parameter_unknown", param: "colour" });
    const daysWithoutSend = await stripe.invoices
      .create({ customer: "cus_x", days_until_due: 3 })
      .catch((e: unknown) => e);
    expect(daysWithoutSend).toMatchObject({ statusCode: 400, param: "days_until_due" });
    const badKey = await client({ key: "sk_live_nope" })
      .customers.create({})
      .catch((e: unknown) => e);
    expect(badKey).toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    expect(badKey).toMatchObject({ statusCode: 401 });
    const badMeta = await stripe.customers
      .create({ metadata: { ["k".repeat(41)]: "v" } })
      .catch((e: unknown) => e);
    expect(badMeta).toMatchObject({ statusCode: 400 });
  });

  it("webhook signatures: the helper's Stripe-Signature verifies with stripe.webhooks.constructEvent and equals generateTestHeaderString", async () => {
    const stripe = client();
    const { invoice } = await newDraft(stripe, "inv_hook");
    await stripe.invoices.addLines(invoice.id, { lines: makeLines(2) });
    await stripe.invoices.finalizeInvoice(invoice.id);
    await stripe.invoices.pay(invoice.id);
    const event = srv.state.eventFor("invoice.paid", invoice.id);
    const secret = "whsec_test_secret";
    const t = Math.floor(Date.now() / 1000);
    const { payload, header } = signEvent(event, secret, t);
    expect(header).toBe(stripe.webhooks.generateTestHeaderString({ payload, secret, timestamp: t }));
    const parsed = stripe.webhooks.constructEvent(payload, header, secret);
    expect(parsed.type).toBe("invoice.paid");
    if (parsed.type === "invoice.paid") expect(parsed.data.object.id).toBe(invoice.id);
    expect(() =>
      stripe.webhooks.constructEvent(payload.replace("invoice.paid", "invoice.voided"), header, secret),
    ).toThrow(Stripe.errors.StripeSignatureVerificationError);
    expect(() => stripe.webhooks.constructEvent(payload, header, "whsec_other")).toThrow(
      Stripe.errors.StripeSignatureVerificationError,
    );
  });
});
