import { spawn } from "node:child_process";
import type Stripe from "stripe";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { InvoiceStore } from "../src/billing/index.js";
import { invoiceId, type Invoice, type InvoiceLine } from "../src/billing/index.js";
import type { CatalogStore } from "../src/catalog/index.js";
import { customerSchema } from "../src/catalog/index.js";
import type { Config } from "../src/config/index.js";
import type { PushStore, StripePusher } from "../src/connectors/stripe/index.js";
import { RateLimiter, type PushDeps } from "../src/connectors/stripe/index.js";
import { childEnv, eventually, guid } from "./helpers.js";
import type { StripeTestServer } from "./stripe-server/index.js";
import { draftInvoice } from "./fixtures/draft-invoice.js";
import { startPushEnv, type PushEnv } from "./stripe-push-setup.js";

/**
 * The Stripe push against real NATS (invoice, catalog and push buckets) and the local Stripe test
 * server through the real SDK. Invoices are stored and finalized through InvoiceStore (the close's
 * own store) from fixtures, so sizes like 600 lines are cheap; test/stripe-push-close.test.ts
 * pushes what the real close finalized.
 */
const KEY = "sk_test_tally_push";
let srv: StripeTestServer;
let config: Config;
let invoices: InvoiceStore;
let catalog: CatalogStore;
let store: PushStore;
let sdk: Stripe;

const DAY = 86_400_000;
const P0 = Date.UTC(2026, 9, 1);
const iso = (ms: number) => new Date(ms).toISOString();

function line(n: number, amount: number, periodStart = P0): InvoiceLine {
  return {
    number: n,
    kind: amount < 0 ? "discount" : "usage",
    plan: "daily",
    price: `p${n}`,
    meter: amount < 0 ? null : `m${n % 6}`,
    description: `line ${n}`,
    period: { start: iso(periodStart), end: iso(periodStart + DAY) },
    quantity: "1",
    unit_amount_decimal: null,
    amount,
    ...(amount < 0
      ? {}
      : {
          snapshot: {
            meter: `m${n % 6}`,
            meter_version: 1,
            cutoff: iso(periodStart + 2 * DAY),
            watermark: iso(periodStart + 2 * DAY),
            quantity: "1",
            event_count: n,
            id_digest: `d${String(n).padStart(31, "0")}`,
          },
        }),
  };
}

/** A draft with `n` lines (amount of line i: `amount(i)`), stored and finalized through InvoiceStore. */
async function finalized(
  customer: string,
  n: number,
  amount: (i: number) => number = (i) => 100 + ((i * 7919) % 997),
  finalizedAt = new Date(),
  currency = "EUR",
): Promise<Invoice> {
  const sub = `${customer}-sub-${guid()}`;
  const lines = Array.from({ length: n }, (_, k) => line(k + 1, amount(k + 1)));
  const draft = draftInvoice(invoiceId(sub, iso(P0)), customer, sub, lines, { currency });
  await invoices.putDraft(draft);
  const [inv] = await invoices.finalize([draft.id], "TALLY", finalizedAt);
  return inv!;
}

/** A Tally customer with (or without) a Stripe customer made on the test server. */
async function customer(
  key: string,
  withStripe = true,
  metadata: Record<string, string> = {},
): Promise<string | null> {
  const cus = withStripe ? await sdk.customers.create({ name: key }) : null;
  await catalog.customers.apply([
    customerSchema.parse({
      key,
      currency: "eur",
      external_ids: cus ? { stripe_customer_id: cus.id } : {},
      metadata,
    }),
  ]);
  await eventually(() => Promise.resolve(catalog.customers.get(key) !== undefined), 5000, `customer ${key}`);
  return cus?.id ?? null;
}

function pusher(overrides: Partial<Config["stripe"]> = {}, extra: Partial<PushDeps> = {}): StripePusher {
  return env.pusher(overrides, extra);
}

/** Runs the real CLI (dist) against this test's NATS. */
function cli(args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  return new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>((resolve) => {
    const child = spawn(process.execPath, ["dist/src/cli/main.js", ...args], {
      env: { ...childEnv(config), ...extraEnv },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    child.on("exit", (code, signal) => resolve({ code, signal, out }));
  });
}

/** The Stripe invoices (server state) carrying this Tally invoice id. */
function stripeInvoicesOf(id: string) {
  return [...srv.state.invoices.values()].filter((i) => i.metadata.tally_invoice === id);
}

/** Every Tally line exactly once across the Stripe invoices, with Tally's amount and period. */
function expectExactLines(inv: Invoice) {
  const got = stripeInvoicesOf(inv.id).flatMap((s) => s.lines);
  expect(got).toHaveLength(inv.lines.length);
  const byLine = new Map(got.map((l) => [Number(l.metadata.tally_line), l]));
  expect(byLine.size).toBe(inv.lines.length);
  for (const l of inv.lines) {
    const s = byLine.get(l.number)!;
    expect(s.amount).toBe(l.amount);
    expect(s.metadata.tally_invoice).toBe(inv.id);
    expect(s.period.start).toBe(Date.parse(l.period.start) / 1000);
    expect(s.period.end).toBe(Date.parse(l.period.end) / 1000 - 1);
  }
}

let env: PushEnv;
beforeAll(async () => {
  env = await startPushEnv("stripe-push-test", KEY);
  ({ srv, config, invoices, catalog, store, sdk } = env);
});
afterAll(async () => {
  await env?.stop();
});
beforeEach(() => {
  srv.faults.clear();
  srv.requests.clear();
});

describe("stripe push", () => {
  it("pushes a finalized invoice: one Stripe invoice, lines and total equal to the minor unit, metadata back-links", async () => {
    const stripeCustomer = await customer("acme", true, {
      stripe_collection_method: "send_invoice",
      stripe_days_until_due: "14",
    });
    // A discount line: negative amounts travel as they are.
    const inv = await finalized("acme", 7, (i) => (i === 7 ? -250 : 1000 + i * 333));
    srv.requests.clear();
    const report = await pusher().pushDue({ only: [inv.id] });
    expect(report).toMatchObject({ pushed: [inv.id], failed: [], mismatched: [] });

    const [s, ...more] = stripeInvoicesOf(inv.id);
    expect(more).toHaveLength(0);
    expect(s).toMatchObject({
      customer: stripeCustomer,
      status: "open",
      currency: "eur",
      autoAdvance: false,
      collectionMethod: "send_invoice",
      daysUntilDue: 14,
      metadata: { tally_invoice: inv.id, tally_number: inv.number, tally_part: "1", tally_parts: "1" },
    });
    expect(s!.lines.reduce((a, l) => a + l.amount, 0)).toBe(inv.total);
    expectExactLines(inv);
    expect(s!.lines.find((l) => l.metadata.tally_line === "1")!.metadata).toMatchObject({
      meter: "m1",
      id_digest: inv.lines[0]!.snapshot!.id_digest,
    });
    // create + add_lines + finalize, each under its deterministic key.
    expect(srv.requests.all().map((r) => [r.endpoint, r.idempotencyKey])).toEqual([
      ["POST /v1/invoices", `tally:${inv.id}:create:1`],
      ["POST /v1/invoices/:id/add_lines", `tally:${inv.id}:add_lines:1.1`],
      ["POST /v1/invoices/:id/finalize", `tally:${inv.id}:finalize:1`],
    ]);
    expect(await store.get(inv.id)).toMatchObject({
      status: "pushed",
      step: "verified",
      expected_total: inv.total,
      parts: [{ stripe_invoice: s!.id, stripe_total: inv.total, stripe_status: "open", finalized: true }],
      last_error: null,
    });
    // Pushed once: a second run does nothing.
    srv.requests.clear();
    expect((await pusher().pushDue({ only: [inv.id] })).pushed).toEqual([]);
    expect(srv.requests.count()).toBe(0);
  });

  it("a 600-line invoice becomes Stripe invoices 'part 1..3 of 3' (250 + 250 + 100 lines) whose totals sum to Tally's", async () => {
    await customer("bigco");
    const inv = await finalized("bigco", 600, (i) => (i % 50 === 0 ? -(i + 1) : 1000 + ((i * 7919) % 9973)));
    const report = await pusher().pushDue({ only: [inv.id] });
    expect(report.pushed).toEqual([inv.id]);
    const parts = stripeInvoicesOf(inv.id).sort(
      (a, b) => Number(a.metadata.tally_part) - Number(b.metadata.tally_part),
    );
    expect(parts.map((p) => p.lines.length)).toEqual([250, 250, 100]);
    expect(parts.map((p) => p.metadata.tally_parts)).toEqual(["3", "3", "3"]);
    expect(parts.map((p) => p.description)).toEqual([
      expect.stringContaining("(part 1 of 3)"),
      expect.stringContaining("(part 2 of 3)"),
      expect.stringContaining("(part 3 of 3)"),
    ]);
    expect(parts.every((p) => p.status === "open")).toBe(true);
    // Consecutive lines per part: part 2 holds 251..500.
    expect(parts[1]!.lines.map((l) => Number(l.metadata.tally_line))).toEqual(
      Array.from({ length: 250 }, (_, k) => 251 + k),
    );
    expect(parts.flatMap((p) => p.lines).reduce((a, l) => a + l.amount, 0)).toBe(inv.total);
    expectExactLines(inv);
    // 100 lines per add_lines request: 3 + 3 + 1.
    expect(srv.requests.count("POST /v1/invoices/:id/add_lines")).toBe(7);
    const rec = await store.get(inv.id);
    expect(rec?.status).toBe("pushed");
    expect(rec?.parts.map((p) => p.stripe_total)).toEqual(
      parts.map((p) => p.lines.reduce((a, l) => a + l.amount, 0)),
    );
  });

  it("a customer without stripe_customer_id is a clear per-invoice error with backoff; the others are pushed; fixing the catalog lets the retry through", async () => {
    await customer("nostripe", false);
    await customer("withstripe");
    const bad = await finalized("nostripe", 3);
    const good = await finalized("withstripe", 3);
    const report = await pusher().pushDue({ only: [bad.id, good.id] });
    expect(report.pushed).toEqual([good.id]);
    expect(report.failed).toEqual([
      { invoice: bad.id, code: "missing_stripe_customer_id", message: expect.stringContaining("nostripe") },
    ]);
    const rec = await store.get(bad.id);
    expect(rec).toMatchObject({ status: "push_failed", last_error: { code: "missing_stripe_customer_id" } });
    expect(Date.parse(rec!.next_attempt_at!)).toBeGreaterThan(Date.now());
    expect(stripeInvoicesOf(bad.id)).toHaveLength(0);
    // What an operator sees: `tally invoices list --status push_failed` and `tally invoices show`.
    const listed = await cli(["invoices", "list", "--status", "push_failed"]);
    expect(listed.code, listed.out).toBe(0);
    expect(listed.out).toMatch(
      new RegExp(`${bad.id}\\s+push_failed\\s+nostripe\\s+missing_stripe_customer_id`),
    );
    expect(listed.out).not.toContain(good.id);
    const shown = await cli(["invoices", "show", bad.id]);
    expect(shown.out).toContain("stripe: push_failed");
    expect(shown.out).toContain("last error: missing_stripe_customer_id");
    // Backing off: not retried before next_attempt_at ...
    expect((await pusher().pushDue({ only: [bad.id] })).backingOff).toBe(1);
    // ... unless forced, after the catalog was fixed.
    const cus = await sdk.customers.create({ name: "nostripe" });
    await catalog.customers.apply([
      customerSchema.parse({
        key: "nostripe",
        currency: "eur",
        external_ids: { stripe_customer_id: cus.id },
      }),
    ]);
    await eventually(() =>
      Promise.resolve(catalog.customers.get("nostripe")?.external_ids.stripe_customer_id === cus.id),
    );
    expect((await pusher().pushDue({ only: [bad.id], force: true })).pushed).toEqual([bad.id]);
    expectExactLines(bad);
  });

  it("a currency Stripe refuses is a per-invoice error, not a crash; the other invoices of the run are pushed", async () => {
    await customer("oddcurrency");
    const ok = await finalized("oddcurrency", 2);
    // Stored as a finalized invoice the way a future currency table might produce it; Stripe
    // (the test server checks the three-letter shape) refuses it.
    const odd = await finalized("oddcurrency", 2, undefined, new Date(), "E1R");
    const report = await pusher().pushDue({ only: [odd.id, ok.id] });
    expect(report.pushed).toEqual([ok.id]);
    expect(report.failed).toEqual([
      {
        invoice: odd.id,
        code: expect.any(String),
        message: expect.stringMatching(/create invoice: .*currency/i),
      },
    ]);
    expect(await store.get(odd.id)).toMatchObject({
      status: "push_failed",
      parts: [{ stripe_invoice: null }],
    });
    expect(stripeInvoicesOf(odd.id)).toHaveLength(0);
  });

  it("a 429 storm (with and without Retry-After) completes with one Stripe invoice each, never above the request limit", async () => {
    const rps = 10;
    await customer("storm");
    const batch = await Promise.all(Array.from({ length: 6 }, () => finalized("storm", 3)));
    srv.requests.clear();
    srv.faults.inject429({ count: 6 });
    srv.faults.inject429({ count: 4, retryAfterSec: 1, endpoint: "POST /v1/invoices/:id/add_lines" });
    srv.faults.inject429({ count: 3, reason: "lock_timeout", endpoint: "POST /v1/invoices/:id/finalize" });
    const started = Date.now();
    const report = await pusher({ maxRps: rps, concurrency: 6 }).pushDue({ only: batch.map((i) => i.id) });
    expect(report.failed).toEqual([]);
    expect(report.pushed.sort()).toEqual(batch.map((i) => i.id).sort());
    for (const inv of batch) {
      expect(stripeInvoicesOf(inv.id)).toHaveLength(1);
      expectExactLines(inv);
    }
    const all = srv.requests.all();
    expect(all.filter((r) => r.status === 429).length).toBe(13);
    // Every request the server saw (the refused ones included): never more than `rps` in any second.
    const at = all.map((r) => r.at).sort((a, b) => a - b);
    for (let i = 0; i + rps < at.length; i++) expect(at[i + rps]! - at[i]!).toBeGreaterThanOrEqual(1000);
    // 18 writes + 13 refused at 10/s take at least 3 s.
    expect(Date.now() - started).toBeGreaterThanOrEqual(2900);
    // Retries reuse the first attempt's key (the SDK would otherwise mint a new one).
    const keys = all.filter((r) => r.status === 429).map((r) => r.idempotencyKey);
    expect(keys.every((k) => k?.startsWith("tally:"))).toBe(true);
  });

  it("5xx and connections dropped after Stripe committed: retried under the same key, one Stripe invoice, each line once", async () => {
    await customer("flaky");
    const inv = await finalized("flaky", 120);
    srv.requests.clear();
    srv.faults.inject5xx({ count: 4, status: 503, endpoint: "POST /v1/invoices" });
    srv.faults.drop({ count: 2, endpoint: "POST /v1/invoices/:id/add_lines", when: "after-commit" });
    srv.faults.drop({ count: 1, endpoint: "POST /v1/invoices/:id/finalize", when: "after-commit" });
    const report = await pusher({ linesPerRequest: 100 }).pushDue({ only: [inv.id] });
    expect(report.pushed).toEqual([inv.id]);
    expect(stripeInvoicesOf(inv.id)).toHaveLength(1);
    expectExactLines(inv);
    const writes = srv.requests.all().filter((r) => r.method === "POST");
    // Every attempt of a step carried that step's key; only the first successful one executed.
    for (const r of writes) expect(r.idempotencyKey).toMatch(new RegExp(`^tally:${inv.id}:`));
    // Executed = answered 200 or committed before the connection was cut; replays do not count.
    const executed = writes
      .filter((r) => !r.replayed && (r.status === 200 || r.fault === "crash-after-commit"))
      .map((r) => r.idempotencyKey);
    expect(writes.filter((r) => r.fault === "crash-after-commit")).toHaveLength(3);
    expect(executed.sort()).toEqual(
      [
        `tally:${inv.id}:create:1`,
        `tally:${inv.id}:add_lines:1.1`,
        `tally:${inv.id}:add_lines:1.2`,
        `tally:${inv.id}:finalize:1`,
      ].sort(),
    );
  });

  it("local push state lost (and Stripe's keys expired): the Stripe invoice is found by metadata search, no duplicate, exactly its lines", async () => {
    await customer("lost");
    // Finalized two days ago: older than Stripe's 24 h key retention.
    const inv = await finalized("lost", 250, undefined, new Date(Date.now() - 2 * DAY));
    const crashing = pusher(
      { linesPerRequest: 100 },
      {
        crashPoint: (p) => {
          if (p === "add_lines:2") throw new Error("simulated crash after chunk 2");
        },
      },
    );
    await crashing.pushOne(inv.id);
    expect(stripeInvoicesOf(inv.id)[0]!.lines).toHaveLength(200);
    await store.forget(inv.id);
    expect(await store.get(inv.id)).toBeNull();
    srv.clock.advance(25 * 3_600_000); // keys pruned: only search can find the draft now
    srv.requests.clear();
    const report = await pusher({ linesPerRequest: 100 }).pushDue({ only: [inv.id] });
    expect(report.pushed).toEqual([inv.id]);
    expect(srv.requests.count("GET /v1/invoices/search")).toBeGreaterThanOrEqual(1);
    expect(srv.requests.count("POST /v1/invoices")).toBe(0);
    expect(srv.requests.count("POST /v1/invoices/:id/add_lines")).toBe(1);
    expect(stripeInvoicesOf(inv.id)).toHaveLength(1);
    expectExactLines(inv);
    expect(stripeInvoicesOf(inv.id)[0]!.status).toBe("open");
  });

  it("local push state lost on a young invoice: the deterministic keys replay; no duplicate", async () => {
    await customer("young");
    const inv = await finalized("young", 5);
    await pusher().pushOne(inv.id);
    await store.forget(inv.id);
    srv.requests.clear();
    expect((await pusher().pushDue({ only: [inv.id] })).pushed).toEqual([inv.id]);
    expect(srv.requests.all().every((r) => r.replayed)).toBe(true);
    expect(stripeInvoicesOf(inv.id)).toHaveLength(1);
    expectExactLines(inv);
  });

  it("zero-total invoices are pushed (Stripe marks them paid); invoices without lines are skipped with a reason", async () => {
    await customer("zero");
    const zero = await finalized("zero", 2, () => 0);
    const empty = await finalized("zero", 0);
    const report = await pusher().pushDue({ only: [zero.id, empty.id] });
    expect(report.pushed).toEqual([zero.id]);
    expect(report.skipped).toEqual([{ invoice: empty.id, reason: "the invoice has no lines" }]);
    expectExactLines(zero);
    expect(stripeInvoicesOf(empty.id)).toHaveLength(0);
  });

  it("the limiter never starts more than its rate in any second", async () => {
    const lim = new RateLimiter(20);
    const t0 = performance.now();
    const starts: number[] = [];
    await Promise.all(
      Array.from({ length: 50 }, () => lim.acquire().then(() => starts.push(performance.now()))),
    );
    for (let i = 0; i + 20 < starts.length; i++)
      expect(starts[i + 20]! - starts[i]!).toBeGreaterThanOrEqual(1000);
    expect(performance.now() - t0).toBeLessThan(3500);
  });
});

describe("SIGKILL of a real `tally push stripe`, then a restart", () => {
  const run = (env: NodeJS.ProcessEnv, args: string[]) => cli(["push", "stripe", ...args], env);

  const env = () => ({
    TALLY_STRIPE_SECRET_KEY: KEY,
    TALLY_STRIPE_API_BASE: srv.url,
    TALLY_STRIPE_LINES_PER_REQUEST: "100",
    TALLY_STRIPE_CONCURRENCY: "1",
  });

  for (const point of ["create", "add_lines:2", "before_finalize", "finalize"]) {
    it(`killed at ${point}: exactly one Stripe invoice with exactly its lines after the restart`, async () => {
      const key = `kill-${point.replace(/\W/g, "")}`;
      await customer(key);
      const inv = await finalized(key, 260);
      const killed = await run({ ...env(), TALLY_FAULT_STRIPE_CRASH_AT: point }, [
        "--once",
        "--invoice",
        inv.id,
      ]);
      expect(killed.signal, killed.out).toBe("SIGKILL");
      const again = await run(env(), ["--once", "--invoice", inv.id]);
      expect(again.code, again.out).toBe(0);
      expect(again.out).toContain("pushed 1;");
      const parts = stripeInvoicesOf(inv.id);
      // 260 lines: parts of 250 + 10, each once.
      expect(parts.map((p) => p.lines.length).sort((a, b) => a - b)).toEqual([10, 250]);
      expect(parts.every((p) => p.status === "open")).toBe(true);
      expectExactLines(inv);
      expect(await store.get(inv.id)).toMatchObject({ status: "pushed", step: "verified" });
      // Every create that ran (not a replay) made the invoice once per part.
      const creates = srv.requests
        .of("POST /v1/invoices")
        .filter((r) => !r.replayed && r.status === 200 && String(r.idempotencyKey).includes(inv.id));
      expect(creates).toHaveLength(2);
    });
  }
});
