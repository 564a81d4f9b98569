import { spawn } from "node:child_process";
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  documentEntryId,
  JournalStore,
  postJournals,
  type JournalEntry,
  type PostDeps,
} from "../src/accounting/index.js";
import type { Invoice } from "../src/billing/index.js";
import { busNames } from "../src/bus/index.js";
import { createStripeClient, PushStore, StripePusher } from "../src/connectors/stripe/index.js";
import { ADMIN_KEY, childEnv, get, log } from "./helpers.js";
import { DAY, HOUR, iso, startCloseEnv, today, type CloseEnv } from "./close-setup.js";
import { signEvent, startStripeServer, type StripeTestServer } from "./stripe-server/index.js";

/*
 * The journal end to end: invoices and a credit note from the real close (events through the
 * edge, sink and ClickHouse), a payment from a signed Stripe webhook, posted by `postJournals`
 * (what the close role runs after each round), read through GET /v1/revenue and the CLI.
 *
 * - acme (EUR) is billed monthly from an anchor mid-month, so its period spans two calendar months;
 * - beta (USD) is billed daily: flat + storage + a 10% discount; a late, lower storage reading
 *   makes a negative true-up that becomes a credit note.
 */
const KEY = "sk_test_tally_accounting";
const WEBHOOK_SECRET = "whsec_tally_accounting_secret_0123";
const D = today();
const P1 = D - 3 * DAY; // beta's first day
// acme's period [S, E): one month ending 2 (or 3) days ago, spanning a month boundary.
const E = new Date(D - 2 * DAY).getUTCDate() === 1 ? D - 3 * DAY : D - 2 * DAY;
const S = (() => {
  const d = new Date(E);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - 1, d.getUTCDate());
})();
const M = Date.UTC(new Date(E).getUTCFullYear(), new Date(E).getUTCMonth(), 1); // the month boundary inside
const days = (E - S) / DAY;
const daysBefore = (M - S) / DAY;
const month1 = iso(S).slice(0, 7);
const month2 = iso(E - 1).slice(0, 7);

const catalog = `
meters:
  - { key: calls, event_type: api_call, aggregation: count }
  - { key: storage, event_type: storage, aggregation: latest, value_property: gb }
plans:
  - key: monthly
    currency: eur
    interval: month
    prices:
      - { key: base, type: flat, unit_amount: ${100 * days} }
      - { key: calls, type: metered, meter: calls, unit_amount: 10 }
  - key: daily
    currency: usd
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: 100 }
      - { key: storage, type: metered, meter: storage, unit_amount: 10 }
    discounts:
      - { key: ten, percent_off: "10", duration: forever }
customers:
  - { key: acme, currency: eur, timezone: UTC }
  - { key: beta, currency: usd, timezone: UTC, external_ids: { stripe_customer_id: STRIPE_BETA } }
subscriptions:
  - { key: acme-monthly, customer: acme, plan: monthly, started_at: "${iso(S)}" }
  - { key: beta-daily, customer: beta, plan: daily, started_at: "${iso(P1)}" }
`;

const accounts = `
accounts:
  receivable: "1200"
  cash: "1000"
  deferred_revenue: "2400"
  discounts: "4900"
  prices:
    - { plan: monthly, price: base, account: "4000" }
    - { plan: monthly, price: calls, account: "4020" }
    - { plan: daily, price: base, account: "4000" }
    - { plan: daily, price: storage, account: "4010" }
`;

let srv: StripeTestServer;
let env: CloseEnv;
let journal: JournalStore;
let push: PushStore;
let postDeps: PostDeps;
const docs: Record<string, Invoice> = {};

beforeAll(async () => {
  srv = await startStripeServer({ port: 0 });
  const sdk = new Stripe(KEY, { host: srv.host, port: srv.port, protocol: "http" });
  const beta = (await sdk.customers.create({ name: "Beta" })).id;
  env = await startCloseEnv(catalog.replace("STRIPE_BETA", beta), {
    TALLY_STRIPE_SECRET_KEY: KEY,
    TALLY_STRIPE_API_BASE: srv.url,
    TALLY_STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    TALLY_STRIPE_MAX_RPS: "100",
  });
  const js = env.edge.nc.jetstream();
  const names = busNames(env.config.nats.prefix);
  journal = await JournalStore.open(js, names.journalBucket, 1, log);
  push = await PushStore.open(js, names.pushBucket, 1);
  postDeps = {
    js,
    journal,
    invoices: env.deps.invoices,
    catalog: env.edge.catalog,
    push,
    pushBucket: names.pushBucket,
    snapshots: env.deps.snapshots,
    timezone: "UTC",
    log,
  };
});
afterAll(async () => {
  await env?.stop();
  await srv?.stop();
});

const admin = async (path: string) => {
  const r = await env.edge.app.request(path, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  return { status: r.status, body: (await r.json()) as any };
};

/** RFC 4180 CSV with a header row, as objects (quoted fields, doubled quotes, CRLF or LF). */
function parseCsv(text: string): Record<string, string>[] {
  const records: string[][] = [];
  let field = "";
  let record: string[] = [];
  let quoted = false;
  const endField = () => {
    record.push(field);
    field = "";
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") endField();
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      endField();
      records.push(record);
      record = [];
    } else field += c;
  }
  if (field !== "" || record.length > 0) {
    endField();
    records.push(record);
  }
  const [header, ...rows] = records;
  return rows.map((r) => Object.fromEntries(header!.map((h, k) => [h, r[k] ?? ""])));
}
const lines = (e: JournalEntry) => e.lines.map((l) => [l.account, l.debit, l.credit]);
/** Every entry posted so far. */
const allEntries = () => journal.list({ from: "2000-01-01", to: "2100-12-31" });

describe("without an accounts: section", () => {
  it("journals nothing and the revenue API answers 409; a bad month is a 400 naming month", async () => {
    const r = await admin(`/v1/revenue?month=${month2}`);
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe("not_configured");
    expect(r.body.error.message).toMatch(/accounts are not configured/);
    for (const bad of ["2026-13", "2026-1", "november", ""]) {
      const b = await admin(`/v1/revenue?month=${bad}`);
      expect(b.status).toBe(400);
      expect(b.body.error.details.errors[0].field).toBe("month");
    }
    expect((await admin("/v1/revenue")).body.error.details.errors[0].field).toBe("month");
    const report = await postJournals(postDeps);
    expect(report.configured).toBe(false);
    expect(await allEntries()).toEqual([]);
  });
});

describe("catalog accounts: section", () => {
  it("refuses an unmapped price, an unknown price and a bad code, naming the field; nothing is stored", async () => {
    const unmapped = await env.apply(accounts.replace(/ {4}- \{ plan: daily, price: storage.*\n/, ""));
    expect(unmapped.status).toBe(400);
    expect(unmapped.body.error.details.errors).toEqual([
      expect.objectContaining({
        field: "accounts.prices",
        message: expect.stringMatching(/price storage of plan daily has no revenue account/),
      }),
    ]);
    const unknown = await env.apply(`${accounts}    - { plan: daily, price: nope, account: "4999" }\n`);
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.details.errors[0]).toMatchObject({ field: "accounts.prices[4].price" });
    const long = await env.apply(accounts.replace('cash: "1000"', 'cash: "10000000000"'));
    expect(long.status).toBe(400);
    expect(long.body.error.details.errors[0]).toMatchObject({ field: "accounts.cash" });
    expect(env.edge.catalog.chart()).toBeUndefined();

    expect((await env.apply(accounts)).status).toBe(200);
    expect(env.edge.catalog.chart()).toMatchObject({ receivable: "1200", version: 1 });
    // A plan applied later must fit the chart (no default revenue account): refused whole.
    const later = await env.apply(`
plans:
  - { key: extra, currency: usd, interval: day, prices: [{ key: base, type: flat, unit_amount: 5 }] }
`);
    expect(later.status).toBe(400);
    expect(later.body.error.details.errors).toEqual([
      expect.objectContaining({
        field: "plans[0].prices[0]",
        message: expect.stringMatching(/no revenue account/),
      }),
    ]);
    expect((await get(env.edge, "/v1/plans/extra")).status).toBe(404);
  });
});

describe("entries from the close", () => {
  it("flat + usage + discount: one balanced entry on the mapped accounts; a two-month period is split by month", async () => {
    await env.send([
      ...Array.from({ length: 3 }, (_, i) => ({
        id: `a1-${i}`,
        type: "api_call",
        customer: "acme",
        time: iso(S + HOUR + i * 1000),
      })),
      ...Array.from({ length: 9 }, (_, i) => ({
        id: `a2-${i}`,
        type: "api_call",
        customer: "acme",
        time: iso(E - DAY + i * 1000),
      })),
      { id: "b1", type: "storage", customer: "beta", time: iso(P1 + HOUR), properties: { gb: "50" } },
    ]);
    const first = await env.closeThrough(D - 2 * DAY);
    expect(first.errors).toEqual([]);
    expect(first.finalized).toHaveLength(2);
    docs.acme = (await env.documents("acme-monthly"))[0]!;
    docs.beta1 = (await env.documents("beta-daily"))[0]!;

    const report = await postJournals(postDeps);
    expect(report).toMatchObject({ configured: true, errors: [], posted: { invoice: 2, payment: 0 } });

    // beta, one day: 100 flat + 50 GB × 10 − 10% = 540.
    const beta = (await journal.get(documentEntryId(docs.beta1)))!;
    expect(beta).toMatchObject({
      kind: "invoice",
      date: iso(P1).slice(0, 10),
      currency: "USD",
      document: docs.beta1.id,
      document_number: docs.beta1.number,
      customer: "beta",
      chart_version: 1,
    });
    expect(lines(beta)).toEqual([
      ["1200", 540, 0],
      ["4000", 0, 100],
      ["4010", 0, 500],
      ["4900", 60, 0],
    ]);

    // acme: 100 per day of flat, 3 calls in the first month and 9 in the second at 10 each.
    const acme = (await journal.get(documentEntryId(docs.acme)))!;
    expect(docs.acme.total).toBe(100 * days + 120);
    expect(acme.date).toBe(iso(E - 1).slice(0, 10));
    expect(lines(acme)).toEqual([
      ["1200", 100 * days + 120, 0],
      ["4000", 0, 100 * daysBefore],
      ["4000", 0, 100 * (days - daysBefore)],
      ["4020", 0, 30],
      ["4020", 0, 90],
    ]);
    expect(acme.lines[1]!.service_period).toEqual({ start: iso(S), end: iso(M) });

    const r1 = await admin(`/v1/revenue?month=${month1}`);
    const r2 = await admin(`/v1/revenue?month=${month2}`);
    expect(r1.status).toBe(200);
    const eur = (r: { body: any }) => r.body.data.filter((x: any) => x.currency === "EUR");
    expect(eur(r1)).toEqual([
      expect.objectContaining({
        account: "4000",
        role: "revenue",
        recognized: 100 * daysBefore,
        billed: 0,
        posted: 0,
      }),
      expect.objectContaining({ account: "4020", recognized: 30, billed: 0, deferred_balance: 0 }),
    ]);
    expect(eur(r2)).toEqual([
      expect.objectContaining({ account: "4000", recognized: 100 * (days - daysBefore), billed: 100 * days }),
      expect.objectContaining({ account: "4020", recognized: 90, billed: 120, posted: 120 }),
    ]);
    const total = (r: { body: any }) =>
      r.body.totals.find((t: any) => t.currency === "EUR").recognized as number;
    expect(total(r1) + total(r2)).toBe(docs.acme.total);
  });

  it("a credit note gets its reversing entry: debit revenue, credit receivable", async () => {
    // A later, lower reading of beta's first day: that day is now worth 100 + 100 − 20, a
    // negative true-up the next invoice (90) cannot absorb: a credit note.
    await env.send([
      {
        id: "b1-late",
        type: "storage",
        customer: "beta",
        time: iso(P1 + 2 * HOUR),
        properties: { gb: "10" },
      },
    ]);
    const second = await env.closeThrough(D - DAY);
    expect(second.errors).toEqual([]);
    const beta = await env.documents("beta-daily");
    const cn = beta.find((d) => d.kind === "credit_note")!;
    docs.beta2 = beta.find((d) => d.kind !== "credit_note" && d.id !== docs.beta1!.id)!;
    expect(cn.total).toBe(-400);

    const report = await postJournals(postDeps);
    expect(report).toMatchObject({ errors: [], posted: { invoice: 1, credit_note: 1 } });
    const e = (await journal.get(documentEntryId(cn)))!;
    expect(e.kind).toBe("credit_note");
    expect(e.document_number).toMatch(/^TALLY-CN-/);
    expect(lines(e)).toEqual([
      ["1200", 0, 400],
      ["4010", 400, 0],
    ]);
    // The true-up keeps the original service period.
    expect(e.lines[1]!.service_period).toEqual({ start: iso(P1), end: iso(P1 + DAY) });
    const next = (await journal.get(documentEntryId(docs.beta2)))!;
    expect(next.lines.reduce((s, l) => s + l.debit - l.credit, 0)).toBe(0);
    expect(next.lines[0]).toMatchObject({ account: "1200", debit: docs.beta2.total });
  });

  it("a Stripe invoice.paid webhook becomes a payment entry: debit cash, credit receivable, once", async () => {
    const pusher = new StripePusher({
      invoices: env.deps.invoices,
      catalog: env.edge.catalog,
      store: push,
      client: createStripeClient(env.config.stripe),
      config: env.config.stripe,
      log,
    });
    expect((await pusher.pushDue({ only: [docs.beta1!.id] })).pushed).toEqual([docs.beta1!.id]);
    const stripeId = [...srv.state.invoices.values()].find(
      (s) => s.metadata.tally_invoice === docs.beta1!.id,
    )!.id;
    // In Stripe, someone credits 40 before the customer pays (a pre-payment credit note): Stripe
    // collects 500 of the 540. The event carries the invoice as it stands, `amount_paid` included,
    // and the journal receives what was paid, not the total.
    const sdk = createStripeClient(env.config.stripe).stripe;
    await sdk.creditNotes.create({
      invoice: stripeId,
      lines: [{ type: "custom_line_item", unit_amount: 40, quantity: 1, description: "goodwill" }],
    });
    await sdk.invoices.pay(stripeId, { paid_out_of_band: true });
    const paid = srv.state.eventFor("invoice.paid", stripeId);
    expect(paid.data.object).toMatchObject({ status: "paid", total: 540, amount_paid: 500 });
    const deliver = async () => {
      const { payload, header } = signEvent(paid, WEBHOOK_SECRET, Math.floor(Date.now() / 1000));
      const r = await env.edge.app.request("/v1/webhooks/stripe", {
        method: "POST",
        headers: { "content-type": "application/json", "stripe-signature": header },
        body: payload,
      });
      return ((await r.json()) as any).outcome as string;
    };
    expect(await deliver()).toBe("applied");
    const report = await postJournals(postDeps);
    expect(report).toMatchObject({ errors: [], posted: { invoice: 0, credit_note: 0, payment: 1 } });
    const entries = await journal.forDocument(docs.beta1!.id);
    expect(entries.map((e) => e.kind).sort()).toEqual(["invoice", "payment"]);
    const pay = entries.find((e) => e.kind === "payment")!;
    expect(pay.date).toBe(iso(paid.created * 1000).slice(0, 10));
    expect(pay.payment).toEqual({ stripe_invoice: stripeId, event: paid.id });
    expect(lines(pay)).toEqual([
      ["1000", 500, 0],
      ["1200", 0, 500],
    ]);
    expect(await deliver()).toBe("duplicate");
    expect((await postJournals(postDeps)).posted.payment).toBe(0);
  });

  it("re-running the close and the posting posts nothing twice", async () => {
    const before = await allEntries();
    expect(before.map((e) => e.kind).sort()).toEqual([
      "credit_note",
      "invoice",
      "invoice",
      "invoice",
      "payment",
    ]);
    const again = await env.closeThrough(D - DAY);
    expect(again.finalized).toEqual([]);
    const report = await postJournals(postDeps);
    expect(report.posted).toEqual({ invoice: 0, credit_note: 0, payment: 0, recognition: 0 });
    // Posting the same entries again (as a crashed poster would) stores nothing: create-only.
    expect(await journal.post(before)).toEqual([]);
    expect(await allEntries()).toEqual(before);
  });

  it("tally journals export --format csv|json and tally revenue --json read the posted journal", async () => {
    const run = (args: string[]) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const child = spawn(process.execPath, ["dist/src/cli/main.js", ...args], {
          env: { ...childEnv(env.config), TALLY_LOG_LEVEL: "silent" },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        let err = "";
        child.stdout.on("data", (b: Buffer) => (out += b.toString("utf8")));
        child.stderr.on("data", (b: Buffer) => (err += b.toString("utf8")));
        child.once("exit", (code) => resolve({ code, out, err }));
      });
    const entries = await journal.list({ from: `${month2}-01`, to: `${month2}-31` });
    const csv = await run(["journals", "export", "--month", month2, "--format", "csv"]);
    expect(csv.code).toBe(0);
    const rows = parseCsv(csv.out);
    expect(rows).toHaveLength(entries.reduce((n, e) => n + e.lines.length, 0));
    const acmeId = documentEntryId(docs.acme!);
    expect(rows.filter((r) => r.entry_id === acmeId)).toEqual([
      expect.objectContaining({
        account: "1200",
        debit: (days + 1.2).toFixed(2),
        credit: "0.00",
        currency: "EUR",
        kind: "invoice",
        customer: "acme",
        document_number: docs.acme!.number,
      }),
      expect.objectContaining({
        account: "4000",
        debit: "0.00",
        credit: daysBefore.toFixed(2),
        service_start: iso(S),
        service_end: iso(M),
      }),
      expect.objectContaining({ account: "4000", credit: (days - daysBefore).toFixed(2) }),
      expect.objectContaining({ account: "4020", credit: "0.30" }),
      expect.objectContaining({ account: "4020", credit: "0.90" }),
    ]);
    const api = await admin(`/v1/journals?month=${month2}`);
    expect(api.status).toBe(200);
    expect(api.body.data).toEqual(entries);
    expect((await admin("/v1/journals?month=2026-00")).body.error.details.errors[0].field).toBe("month");
    const json = await run(["journals", "export", "--month", month2, "--format", "json"]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.out)).toEqual(entries);
    const rev = await run(["revenue", "--month", month1, "--json"]);
    expect(rev.code).toBe(0);
    expect(JSON.parse(rev.out)).toEqual((await admin(`/v1/revenue?month=${month1}`)).body);
    // The credit note is listed by kind (invoices list --kind), alone.
    const cns = await run(["invoices", "list", "--kind", "credit_note", "--json"]);
    expect(cns.code).toBe(0);
    const listed = JSON.parse(cns.out) as { id: string; kind: string; total: number }[];
    expect(listed.map((d) => d.kind)).toEqual(["credit_note"]);
    expect(listed[0]!.total).toBeLessThan(0);
    const wrongKind = await run(["invoices", "list", "--kind", "bill"]);
    expect(wrongKind.code).not.toBe(0);
    expect(wrongKind.err).toMatch(/--kind.*must be invoice or credit_note/);
    const bad = await run(["revenue", "--month", "2026-13"]);
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/--month.*2026-13.*YYYY-MM/);
  });

  it("a true-up of a two-month period is split by when the late usage happened; a period closed before it ends defers", async () => {
    // One late call in the first month of acme's billed period: a true-up line on acme's next
    // invoice, for the period [S, E). Split by time, the first month would get only part of it.
    await env.send([{ id: "a-late", type: "api_call", customer: "acme", time: iso(S + 2 * HOUR) }]);
    // acme's next period [E, E2) is closed now, before it ends: a test device (a negative grace,
    // as in test/close-end.test.ts), not something the close does in production. It is what an
    // in-advance invoice would look like: the service months after today's are deferred.
    const E2 = (() => {
      const d = new Date(E);
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate());
    })();
    const closed = await env.closeThrough(E2);
    expect(closed.errors).toEqual([]);
    const acme2 = (await env.documents("acme-monthly"))[1]!;
    expect(acme2.period).toEqual({ start: iso(E), end: iso(E2) });
    const trueUp = acme2.lines.find((l) => l.true_up !== undefined)!;
    expect(trueUp).toMatchObject({ amount: 10, period: { start: iso(S), end: iso(E) } });

    expect((await postJournals(postDeps)).errors).toEqual([]);
    const e = (await journal.get(documentEntryId(acme2)))!;
    const todayUtc = new Date().toISOString().slice(0, 10);
    expect(e.date).toBe(todayUtc);
    expect(
      e.lines
        .filter((l) => l.document_line === trueUp.number)
        .map((l) => [l.account, l.credit, l.service_period]),
    ).toEqual([["4020", 10, { start: iso(S), end: iso(M) }]]);
    // The flat fee of [E, E2) by day: the days before the next month start, and the rest.
    const M3 = Date.UTC(new Date(E).getUTCFullYear(), new Date(E).getUTCMonth() + 1, 1);
    const n2 = (E2 - E) / DAY;
    const d1 = (M3 - E) / DAY;
    const fee = 100 * days;
    let first = Math.floor((fee * d1) / n2);
    let second = Math.floor((fee * (n2 - d1)) / n2);
    if (first + second < fee) {
      if ((fee * d1) % n2 >= (fee * (n2 - d1)) % n2) first++;
      else second++;
    }
    const month3 = iso(M3).slice(0, 7);
    if (todayUtc.slice(0, 7) < month3) {
      const deferred = e.lines.filter((l) => l.account === "2400");
      expect(deferred.map((l) => [l.credit, l.revenue_account, l.recognize_on])).toEqual([
        [
          second,
          "4000",
          iso(Date.UTC(new Date(M3).getUTCFullYear(), new Date(M3).getUTCMonth() + 1, 0)).slice(0, 10),
        ],
      ]);
      expect((await admin(`/v1/revenue?month=${todayUtc.slice(0, 7)}`)).body.data).toContainEqual(
        expect.objectContaining({ currency: "EUR", account: "4000", deferred_balance: second }),
      );
      // On the last day of that month the deferral is recognized, once.
      const lastDay = Date.parse(`${deferred[0]!.recognize_on!}T12:00:00Z`);
      const r = await postJournals({ ...postDeps, now: () => lastDay });
      // (beta's daily periods closed early the same way recognize theirs too)
      expect(r.errors).toEqual([]);
      expect((await journal.forDocument(acme2.id)).map((x) => [x.kind, x.date])).toEqual([
        ["invoice", todayUtc],
        ["recognition", deferred[0]!.recognize_on],
      ]);
      expect((await postJournals({ ...postDeps, now: () => lastDay })).posted.recognition).toBe(0);
      const m3 = await admin(`/v1/revenue?month=${month3}`);
      expect(m3.body.data).toContainEqual(
        expect.objectContaining({
          currency: "EUR",
          account: "4000",
          recognized: second,
          deferred_balance: 0,
        }),
      );
    }
    expect(e.lines.filter((l) => l.account === "4000").reduce((a, l) => a + l.credit, 0)).toBe(
      todayUtc.slice(0, 7) < month3 ? first : fee,
    );
  });
});
