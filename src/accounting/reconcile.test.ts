import { describe, expect, it } from "vitest";
import type { InvoiceSummary } from "../billing/index.js";
import type { StripePush } from "../connectors/stripe/index.js";
import type { JournalEntry } from "./journal.js";
import { compareDocument, documentsOfMonth, formatReport, type StripeSide } from "./reconcile.js";

const NOW = Date.parse("2026-12-10T00:00:00Z");
const opts = { now: NOW, settleMs: 3_600_000, receivable: "1200" };

const doc = (over: Partial<InvoiceSummary> = {}): InvoiceSummary => ({
  id: "inv_a",
  kind: "invoice",
  number: "TALLY-000001",
  status: "finalized",
  customer: "acme",
  subscription: "acme-pro",
  period_start: "2026-11-01T00:00:00.000Z",
  period_end: "2026-12-01T00:00:00.000Z",
  currency: "USD",
  total: 1234,
  finalized_at: "2026-12-01T01:00:00.000Z",
  ...over,
});

const pushed = { status: "pushed", last_error: null } as unknown as StripePush;

const stripeInvoice = (
  over: Partial<StripeSide["invoices"][number]> = {},
): StripeSide["invoices"][number] => ({
  id: "in_1",
  status: "open",
  total: 1234,
  currency: "usd",
  amount_paid: 0,
  metadata: { tally_invoice: "inv_a", tally_part: "1" },
  status_transitions: { finalized_at: 1, marked_uncollectible_at: null, paid_at: null, voided_at: null },
  ...over,
});

const entry = (kind: JournalEntry["kind"], lines: [string, number, number][]): JournalEntry => ({
  id: `je_${kind}`,
  kind,
  date: "2026-11-30",
  currency: "USD",
  currency_exponent: 2,
  customer: "acme",
  document: "inv_a",
  document_number: "TALLY-000001",
  narration: "",
  lines: lines.map(([account, debit, credit]) => ({
    account,
    debit,
    credit,
    description: "",
    service_period: null,
  })),
  posted_at: "2026-12-01T01:00:00.000Z",
});

const invoiceEntry = entry("invoice", [
  ["1200", 1234, 0],
  ["4000", 0, 1234],
]);

describe("compareDocument", () => {
  it("finds nothing when Tally, Stripe and the journal agree", () => {
    expect(
      compareDocument(
        {
          doc: doc(),
          push: pushed,
          stripe: { invoices: [stripeInvoice()], creditNotes: [] },
          journal: [invoiceEntry],
        },
        opts,
      ),
    ).toEqual([]);
  });

  it("reports a Stripe total changed behind Tally's back, a voided part and a duplicate push", () => {
    const checks = (invoices: StripeSide["invoices"]) =>
      compareDocument(
        { doc: doc(), push: pushed, stripe: { invoices, creditNotes: [] }, journal: null },
        opts,
      ).map((d) => [d.check, d.tally, d.stripe]);
    expect(checks([stripeInvoice({ total: 1334 })])).toEqual([["stripe_total", "1234", "1334"]]);
    expect(checks([stripeInvoice({ status: "void" })])).toEqual([
      ["stripe_status", null, null],
      ["stripe_total", "1234", "0"],
    ]);
    expect(checks([stripeInvoice(), stripeInvoice({ id: "in_2" })])).toEqual([
      ["stripe_duplicate", null, null],
      ["stripe_total", "1234", "2468"],
    ]);
    expect(checks([])).toEqual([["stripe_missing", "1234", null]]);
    expect(checks([stripeInvoice({ status: "draft" })])).toEqual([["stripe_status", null, null]]);
    // TALLY_STRIPE_FINALIZE=false leaves pushed invoices as drafts on purpose.
    const draft = { invoices: [stripeInvoice({ status: "draft" })], creditNotes: [] };
    expect(
      compareDocument(
        { doc: doc(), push: pushed, stripe: draft, journal: null },
        { ...opts, draftsExpected: true },
      ),
    ).toEqual([]);
  });

  it("reports a document not pushed or not journaled only once it is older than the settle time", () => {
    const facts = { doc: doc(), push: null, stripe: { invoices: [], creditNotes: [] }, journal: [] };
    expect(compareDocument(facts, opts).map((d) => d.check)).toEqual(["not_pushed", "journal_missing"]);
    const young = { ...facts, doc: doc({ finalized_at: new Date(NOW - 60_000).toISOString() }) };
    expect(compareDocument(young, opts)).toEqual([]);
  });

  it("checks the receivable the journal posted, its balance, and payments against Stripe's", () => {
    const wrong = entry("invoice", [
      ["1200", 1200, 0],
      ["4000", 0, 1234],
    ]);
    expect(
      compareDocument({ doc: doc(), push: null, stripe: null, journal: [wrong] }, opts).map((d) => [
        d.check,
        d.journal,
      ]),
    ).toEqual([
      ["journal_unbalanced", "-34"],
      ["journal_amount", "1200"],
    ]);
    const paid = stripeInvoice({ status: "paid", amount_paid: 1234 });
    const stripe = { invoices: [paid], creditNotes: [] };
    expect(
      compareDocument({ doc: doc(), push: pushed, stripe, journal: [invoiceEntry] }, opts).map(
        (d) => d.check,
      ),
    ).toEqual(["payment_missing"]);
    const payment = entry("payment", [
      ["1000", 1000, 0],
      ["1200", 0, 1000],
    ]);
    expect(
      compareDocument({ doc: doc(), push: pushed, stripe, journal: [invoiceEntry, payment] }, opts).map(
        (d) => [d.check, d.stripe, d.journal],
      ),
    ).toEqual([["payment_amount", "1234", "1000"]]);
  });

  it("compares a credit note with its Stripe credit notes (Stripe's totals are positive)", () => {
    const cn = doc({ id: "cn_a", kind: "credit_note", number: "TALLY-CN-000001", total: -400 });
    const live = (total: number) => ({
      invoices: [],
      creditNotes: [
        {
          id: "cn_1",
          status: "issued" as const,
          total,
          currency: "usd",
          metadata: { tally_credit_note: "cn_a" },
        },
      ],
    });
    expect(compareDocument({ doc: cn, push: pushed, stripe: live(400), journal: null }, opts)).toEqual([]);
    expect(
      compareDocument({ doc: cn, push: pushed, stripe: live(300), journal: null }, opts).map((d) => [
        d.check,
        d.tally,
        d.stripe,
      ]),
    ).toEqual([["stripe_total", "-400", "-300"]]);
  });
});

describe("the month of a document", () => {
  it("is the day of the earlier of finalization and the period's last instant, in the time zone", () => {
    const month = (d: InvoiceSummary, tz: string) => documentsOfMonth([d], "2026-11", tz).length === 1;
    expect(month(doc(), "UTC")).toBe(true);
    // 2026-12-01T00:00 UTC is already December 1 in UTC+14.
    expect(month(doc({ period_end: "2026-12-01T10:00:00.000Z" }), "Pacific/Kiritimati")).toBe(false);
    expect(
      month(doc({ finalized_at: "2026-11-20T10:00:00.000Z", period_end: "2027-01-01T00:00:00Z" }), "UTC"),
    ).toBe(true);
    const docs = [
      doc(),
      doc({ id: "inv_b", status: "draft" }),
      doc({ id: "inv_c", period_end: "2027-01-01T00:00:00Z", finalized_at: "2027-01-01T02:00:00Z" }),
    ];
    expect(documentsOfMonth(docs, "2026-11", "UTC").map((d) => d.id)).toEqual(["inv_a"]);
    expect(() => documentsOfMonth(docs, "2026-13", "UTC")).toThrow(/month must be YYYY-MM/);
  });

  it("prints a table with one row per difference", () => {
    const out = formatReport({
      month: "2026-11",
      documents: 1,
      compared: { stripe: true, journal: false },
      differences: compareDocument(
        {
          doc: doc(),
          push: pushed,
          stripe: { invoices: [stripeInvoice({ total: 1 })], creditNotes: [] },
          journal: null,
        },
        opts,
      ),
    });
    expect(out).toContain("1 difference");
    expect(out).toMatch(
      /acme\s+TALLY-000001\s+stripe_total\s+1234\s+1\s+-\s+Stripe's total differs by -1233/,
    );
  });
});
