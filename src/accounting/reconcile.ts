import { createHash } from "node:crypto";
import { DateTime } from "luxon";
import pMap from "p-map";
import type Stripe from "stripe";
import type { InvoiceSummary } from "../billing/index.js";
import type { StripePush } from "../connectors/stripe/index.js";
import type { WebhookEmitter } from "../webhooks/emitter.js";
import { documentDate } from "./derive.js";
import type { JournalEntry, JournalReader } from "./journal.js";

/*
 * Reconciliation (issue 12, item 5): per finalized Tally document of a month, what Tally billed,
 * what Stripe holds now (read live, not the push record: someone may have voided or edited an
 * invoice in Stripe's dashboard) and what the journal posted. Any difference is a row of the
 * report and a `reconciliation.mismatch` webhook.
 */

/** What a difference is about. */
export type ReconcileCheck =
  /** Finalized longer than the settle time and not pushed to Stripe (pending or failing). */
  | "not_pushed"
  /** The push says pushed, but Stripe has no invoice (or credit note) for it. */
  | "stripe_missing"
  /** More than one live Stripe document for one part: pushed twice. */
  | "stripe_duplicate"
  /** A live Stripe document naming a Tally document that does not exist. */
  | "stripe_unknown"
  /** A Stripe part still a draft, or voided / marked uncollectible. */
  | "stripe_status"
  /** Stripe's total (sum of its parts, voided ones excluded) differs from Tally's. */
  | "stripe_total"
  | "stripe_currency"
  /** Finalized longer than the settle time and no journal entry. */
  | "journal_missing"
  /** An entry whose debits and credits differ. */
  | "journal_unbalanced"
  /** The receivable the entry posted differs from the document's total (or its currency does). */
  | "journal_amount"
  /** Stripe says paid (longer than the settle time ago) and the journal has no payment. */
  | "payment_missing"
  /** The journal's payments differ from what Stripe says was paid. */
  | "payment_amount";

/** One row of the report. Amounts are minor units of the document's currency, as strings or null. */
export interface Difference {
  customer: string;
  document: string;
  number: string | null;
  check: ReconcileCheck;
  tally: string | null;
  stripe: string | null;
  journal: string | null;
  message: string;
}

/** The live Stripe side of one document (null when Stripe is not configured). */
export interface StripeSide {
  /** Stripe invoices whose `tally_invoice` metadata names the document. */
  invoices: Pick<
    Stripe.Invoice,
    "id" | "status" | "total" | "currency" | "amount_paid" | "metadata" | "status_transitions"
  >[];
  /** Stripe credit notes whose `tally_credit_note` metadata names the document. */
  creditNotes: Pick<Stripe.CreditNote, "id" | "status" | "total" | "currency" | "metadata">[];
}

/** Everything one document's comparison reads. */
export interface DocumentFacts {
  doc: InvoiceSummary;
  push: StripePush | null;
  stripe: StripeSide | null;
  /** Every entry of the document; null when the journal is not configured. */
  journal: readonly JournalEntry[] | null;
}

export interface CompareOptions {
  now: number;
  /** A document younger than this is not yet expected in Stripe or the journal. */
  settleMs: number;
  /** The receivable account code (the catalog's `accounts.receivable`). */
  receivable: string;
  /** TALLY_STRIPE_FINALIZE=false: pushed invoices are left as drafts for review, not a difference. */
  draftsExpected?: boolean;
}

const fmt = (n: number | null) => (n === null ? null : String(n));

/** Net receivable movement of entries (debits − credits on the receivable account). */
function receivableOf(entries: readonly JournalEntry[], account: string): number {
  let net = 0;
  for (const e of entries) for (const l of e.lines) if (l.account === account) net += l.debit - l.credit;
  return net;
}

/**
 * The differences of one document (pure): Tally ↔ Stripe (live), Tally ↔ journal, and Stripe's
 * payments ↔ the journal's. A side that is not configured is not compared.
 */
export function compareDocument(f: DocumentFacts, opts: CompareOptions): Difference[] {
  const { doc } = f;
  const out: Difference[] = [];
  const diff = (
    check: ReconcileCheck,
    message: string,
    v: { tally?: number | null; stripe?: number | null; journal?: number | null } = {},
  ) =>
    out.push({
      customer: doc.customer,
      document: doc.id,
      number: doc.number,
      check,
      tally: fmt(v.tally ?? null),
      stripe: fmt(v.stripe ?? null),
      journal: fmt(v.journal ?? null),
      message,
    });
  const settled = doc.finalized_at !== null && opts.now - Date.parse(doc.finalized_at) >= opts.settleMs;
  const isCredit = (doc.kind ?? "invoice") === "credit_note";
  const currency = doc.currency.toLowerCase();

  if (f.stripe !== null) {
    const status = f.push?.status ?? "pending";
    const live = isCredit
      ? f.stripe.creditNotes.map((c) => ({
          id: c.id,
          part: c.metadata?.tally_part ?? "1",
          status: c.status,
          void: c.status === "void",
          total: -c.total,
          currency: c.currency,
        }))
      : f.stripe.invoices.map((i) => ({
          id: i.id,
          part: i.metadata?.tally_part ?? "1",
          status: i.status ?? "draft",
          void: i.status === "void",
          total: i.total,
          currency: i.currency,
        }));
    if (status === "skipped") {
      if (live.length > 0) diff("stripe_duplicate", `skipped by the push, yet Stripe has ${live[0]!.id}`);
    } else if (live.length === 0) {
      if (status === "pushed" || status === "mismatch") {
        diff("stripe_missing", `the push recorded it as ${status}, but Stripe has no document for it`, {
          tally: doc.total,
        });
      } else if (settled) {
        const why = f.push?.last_error ? ` (${f.push.last_error.code}: ${f.push.last_error.message})` : "";
        diff("not_pushed", `finalized ${doc.finalized_at ?? "?"}, push ${status}${why}`, {
          tally: doc.total,
        });
      }
    } else {
      const byPart = new Map<string, number>();
      for (const l of live) if (!l.void) byPart.set(l.part, (byPart.get(l.part) ?? 0) + 1);
      for (const [part, n] of byPart) {
        if (n > 1) diff("stripe_duplicate", `${n} live Stripe documents for part ${part}`);
      }
      for (const l of live) {
        if (l.status === "draft" && status === "pushed" && opts.draftsExpected !== true) {
          diff("stripe_status", `Stripe ${l.id} is still a draft`);
        } else if (l.status === "void" || l.status === "uncollectible") {
          diff("stripe_status", `Stripe ${l.id} is ${l.status}`);
        }
        if (l.currency !== currency) {
          diff(
            "stripe_currency",
            `Stripe ${l.id} is in ${l.currency.toUpperCase()}, Tally's in ${doc.currency}`,
          );
        }
      }
      const stripeTotal = live.reduce((s, l) => s + (l.void ? 0 : l.total), 0);
      if (stripeTotal !== doc.total && (status === "pushed" || status === "mismatch")) {
        diff("stripe_total", `Stripe's total differs by ${stripeTotal - doc.total}`, {
          tally: doc.total,
          stripe: stripeTotal,
        });
      }
    }
  }

  if (f.journal !== null) {
    const own = f.journal.filter((e) => e.kind === "invoice" || e.kind === "credit_note");
    if (own.length === 0) {
      if (settled) diff("journal_missing", "no journal entry for the document", { tally: doc.total });
    } else {
      for (const e of f.journal) {
        const debits = e.lines.reduce((s, l) => s + l.debit, 0);
        const credits = e.lines.reduce((s, l) => s + l.credit, 0);
        if (debits !== credits) {
          diff("journal_unbalanced", `entry ${e.id} debits ${debits}, credits ${credits}`, {
            journal: debits - credits,
          });
        }
      }
      const posted = receivableOf(own, opts.receivable);
      if (posted !== doc.total || own.some((e) => e.currency !== doc.currency)) {
        diff(
          "journal_amount",
          `receivable ${posted} (${own[0]!.currency}) posted for a total of ${doc.total}`,
          {
            tally: doc.total,
            journal: posted,
          },
        );
      }
    }
  }

  if (f.stripe !== null && f.journal !== null && !isCredit) {
    const paid = f.stripe.invoices.filter((i) => i.status === "paid");
    const stripePaid = paid.reduce((s, i) => s + i.amount_paid, 0);
    const payments = f.journal.filter((e) => e.kind === "payment");
    const journalPaid = -receivableOf(payments, opts.receivable);
    const paidLongAgo = paid.some((i) => {
      const at = i.status_transitions?.paid_at;
      return at === null || at === undefined || opts.now - at * 1000 >= opts.settleMs;
    });
    if (stripePaid > 0 && payments.length === 0) {
      if (paidLongAgo) {
        diff("payment_missing", "paid in Stripe, no payment in the journal", {
          tally: doc.total,
          stripe: stripePaid,
          journal: 0,
        });
      }
    } else if (stripePaid !== journalPaid && (payments.length > 0 || stripePaid > 0)) {
      diff("payment_amount", `Stripe paid ${stripePaid}, the journal received ${journalPaid}`, {
        stripe: stripePaid,
        journal: journalPaid,
      });
    }
  }
  return out;
}

/** `2026-11` → its first instant and the first instant of the next month, in `tz`. */
export function monthRange(month: string, tz: string): { start: DateTime; end: DateTime } {
  const start = DateTime.fromFormat(month, "yyyy-MM", { zone: tz });
  if (!/^\d{4}-\d{2}$/.test(month) || !start.isValid) {
    throw new RangeError(`month must be YYYY-MM (e.g. 2026-11), got ${JSON.stringify(month)}`);
  }
  return { start, end: start.plus({ months: 1 }) };
}

/** Where the reconciliation reads each side; a side left out is not compared. */
export interface ReconcileDeps {
  /** Finalized documents (summaries) whose accounting date is in the month. */
  documents: readonly InvoiceSummary[];
  /** Whether Tally has a document with this id at all (any month, any status). */
  exists: (id: string) => boolean;
  push: { get(invoice: string): Promise<StripePush | null> } | null;
  stripe: Stripe | null;
  journal: JournalReader | null;
  receivable: string;
  draftsExpected?: boolean;
  emitter?: WebhookEmitter | undefined;
  /** The month's first instant: Stripe documents created before it cannot be this month's. */
  since: Date;
  /** The next month's first instant: a Stripe document naming no Tally document is this month's if created before it. */
  until: Date;
  now?: number;
  settleMs: number;
}

export interface ReconcileReport {
  month: string;
  documents: number;
  compared: { stripe: boolean; journal: boolean };
  differences: Difference[];
}

/** The id of a mismatch event: the same difference found again is the same event (delivered once). */
export function mismatchEventId(month: string, d: Difference): string {
  const h = createHash("sha256")
    .update([month, d.document, d.check, d.tally, d.stripe, d.journal].join("\u0000"))
    .digest("hex");
  return `evt_reconciliation_mismatch_${h.slice(0, 32)}`;
}

/**
 * Reconciles one month: reads Stripe's invoices and credit notes created since the month began
 * (list endpoints, 100 per request, so 100,000 documents cost about 1,000 requests under the
 * client's rate limiter rather than one per document), each document's push record and journal
 * entries, compares them and raises `reconciliation.mismatch` for each difference.
 */
export async function reconcile(deps: ReconcileDeps, month: string): Promise<ReconcileReport> {
  const docs = new Map(deps.documents.map((d) => [d.id, d]));
  const stripeOf = new Map<string, StripeSide>();
  const unknown: Difference[] = [];
  const orphan = (id: string, tallyId: string, customer: string, status: string | null, total: number) =>
    unknown.push({
      customer: `stripe:${customer}`,
      document: tallyId,
      number: null,
      check: "stripe_unknown",
      tally: null,
      stripe: String(total),
      journal: null,
      message: `Stripe ${id} (${status ?? "?"}) names Tally document ${tallyId}, which does not exist`,
    });
  const customerOf = (c: string | { id: string } | null) => (typeof c === "string" ? c : (c?.id ?? "?"));
  // An orphan is reported in the month it was created in (each month's run lists from its start on).
  const ofMonth = (created: number) =>
    created * 1000 >= deps.since.getTime() && created * 1000 < deps.until.getTime();
  if (deps.stripe !== null) {
    for (const id of docs.keys()) stripeOf.set(id, { invoices: [], creditNotes: [] });
    // A day of slack for clocks: Stripe stamps `created` with its own.
    const gte = Math.floor(deps.since.getTime() / 1000) - 86_400;
    for await (const inv of deps.stripe.invoices.list({ created: { gte }, limit: 100 })) {
      const tallyId = inv.metadata?.tally_invoice;
      if (tallyId === undefined) continue;
      stripeOf.get(tallyId)?.invoices.push(inv);
      if (!deps.exists(tallyId) && ofMonth(inv.created)) {
        orphan(inv.id, tallyId, customerOf(inv.customer), inv.status, inv.total);
      }
    }
    for await (const cn of deps.stripe.creditNotes.list({ created: { gte }, limit: 100 })) {
      const tallyId = cn.metadata?.tally_credit_note;
      if (tallyId === undefined) continue;
      stripeOf.get(tallyId)?.creditNotes.push(cn);
      if (!deps.exists(tallyId) && ofMonth(cn.created)) {
        orphan(cn.id, tallyId, customerOf(cn.customer), cn.status, -cn.total);
      }
    }
  }
  const now = deps.now ?? Date.now();
  const differences = (
    await pMap(
      [...docs.values()],
      async (doc) =>
        compareDocument(
          {
            doc,
            push: deps.push === null ? null : await deps.push.get(doc.id),
            stripe: stripeOf.get(doc.id) ?? null,
            journal: deps.journal === null ? null : await deps.journal.forDocument(doc.id),
          },
          {
            now,
            settleMs: deps.settleMs,
            receivable: deps.receivable,
            draftsExpected: deps.draftsExpected === true,
          },
        ),
      { concurrency: 64 },
    )
  ).flat();
  differences.push(...unknown);
  differences.sort((a, b) =>
    a.customer === b.customer
      ? (a.number ?? a.document).localeCompare(b.number ?? b.document)
      : a.customer.localeCompare(b.customer),
  );
  if (deps.emitter !== undefined) {
    for (const d of differences) {
      await deps.emitter.emit({
        id: mismatchEventId(month, d),
        type: "reconciliation.mismatch",
        data: { month, ...d },
      });
    }
  }
  return {
    month,
    documents: docs.size,
    compared: { stripe: deps.stripe !== null, journal: deps.journal !== null },
    differences,
  };
}

/** The report as a fixed-width table (one row per difference) for a terminal. */
export function formatReport(r: ReconcileReport): string {
  const head = `${r.month}: ${r.documents} documents; compared Tally with ${
    [r.compared.stripe ? "Stripe" : null, r.compared.journal ? "the journal" : null]
      .filter((x) => x !== null)
      .join(" and ") || "nothing (neither Stripe nor accounts are configured)"
  }; ${r.differences.length} difference${r.differences.length === 1 ? "" : "s"}`;
  if (r.differences.length === 0) return `${head}\n`;
  const rows = [
    ["customer", "document", "check", "tally", "stripe", "journal", "detail"],
    ...r.differences.map((d) => [
      d.customer,
      d.number ?? d.document,
      d.check,
      d.tally ?? "-",
      d.stripe ?? "-",
      d.journal ?? "-",
      d.message,
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return `${head}\n${rows.map(line).join("\n")}\n`;
}

/** The finalized documents whose accounting date (the journal's {@link documentDate}) is in `month`. */
export function documentsOfMonth(all: Iterable<InvoiceSummary>, month: string, tz: string): InvoiceSummary[] {
  monthRange(month, tz);
  return [...all].filter(
    (d) =>
      d.status === "finalized" &&
      documentDate(
        { finalized_at: d.finalized_at, period: { start: d.period_start, end: d.period_end } },
        tz,
      ).startsWith(`${month}-`),
  );
}
