import type Stripe from "stripe";
import type { Invoice, InvoiceLine } from "../../billing/index.js";
import type { Customer } from "../../catalog/index.js";
import type { StripeConfig } from "../../config/index.js";

/**
 * What a Tally invoice becomes in Stripe (pure, no I/O): its parts (one Stripe invoice per at
 * most `maxLinesPerInvoice` lines), each part's `add_lines` chunks, and the exact parameters and
 * idempotency key of every request. Deterministic: the same invoice and settings give the same
 * requests byte for byte, which is what lets a restarted push replay a request under its key.
 */
export interface PushPlan {
  invoice: string;
  /** Upper-case ISO code on Tally's side; Stripe takes it lower-case. */
  currency: string;
  collection: Collection;
  parts: PartPlan[];
  /** Tally's total: the sum of the parts' totals. */
  total: number;
}

export interface Collection {
  method: "charge_automatically" | "send_invoice";
  /** `send_invoice` only. */
  days_until_due: number | null;
}

export interface PartPlan {
  /** 1-based. */
  part: number;
  /** Tally line numbers on this part, in order. */
  lines: number[];
  /** Each chunk: the indexes into `lines` of one `add_lines` request. */
  chunks: InvoiceLine[][];
  /** The sum of this part's line amounts: what Stripe's total must be. */
  total: number;
}

/** Idempotency keys: `tally:<invoice>:<step>:<part>[.<chunk>]`, all under Stripe's 255 characters. */
export const pushKey = {
  create: (invoice: string, part: number) => `tally:${invoice}:create:${part}`,
  addLines: (invoice: string, part: number, chunk: number) => `tally:${invoice}:add_lines:${part}.${chunk}`,
  finalize: (invoice: string, part: number) => `tally:${invoice}:finalize:${part}`,
};

/**
 * The customer's collection settings: `stripe_collection_method` / `stripe_days_until_due` in the
 * customer's metadata (the catalog has no such fields; metadata travels with the customer), else
 * the configured defaults. `days_until_due` only goes with `send_invoice` (Stripe refuses it
 * otherwise).
 */
export function collectionOf(customer: Customer, config: StripeConfig): Collection {
  const m = customer.metadata.stripe_collection_method;
  const method = m === "send_invoice" || m === "charge_automatically" ? m : config.collectionMethod;
  const d = customer.metadata.stripe_days_until_due;
  const days = d !== undefined && /^\d{1,4}$/.test(d) ? Number(d) : config.daysUntilDue;
  return { method, days_until_due: method === "send_invoice" ? days : null };
}

/**
 * Splits an invoice into parts of at most `maxLines` consecutive lines (line-number order) and
 * each part into chunks of at most `perRequest`. Consecutive, so "part 2 of 3" holds lines
 * 251..500 and a reader finds any Tally line on exactly one Stripe invoice.
 */
export function planPush(
  invoice: Invoice,
  collection: Collection,
  settings: { maxLinesPerInvoice: number; linesPerRequest: number },
): PushPlan {
  const lines = [...invoice.lines].sort((a, b) => a.number - b.number);
  const parts: PartPlan[] = [];
  for (let i = 0; i < lines.length; i += settings.maxLinesPerInvoice) {
    const slice = lines.slice(i, i + settings.maxLinesPerInvoice);
    const chunks: InvoiceLine[][] = [];
    for (let j = 0; j < slice.length; j += settings.linesPerRequest)
      chunks.push(slice.slice(j, j + settings.linesPerRequest));
    parts.push({
      part: parts.length + 1,
      lines: slice.map((l) => l.number),
      chunks,
      total: slice.reduce((s, l) => s + l.amount, 0),
    });
  }
  return { invoice: invoice.id, currency: invoice.currency, collection, parts, total: invoice.total };
}

/** Epoch seconds of an ISO instant (Stripe's periods are in seconds). */
function seconds(iso: string): number {
  return Math.floor(Date.parse(iso) / 1000);
}

/** The `POST /v1/invoices` parameters of one part (a draft that never advances by itself). */
export function createParams(
  invoice: Invoice,
  plan: PushPlan,
  part: PartPlan,
  stripeCustomer: string,
): Stripe.InvoiceCreateParams {
  const n = plan.parts.length;
  const label = invoice.number ?? invoice.id;
  return {
    customer: stripeCustomer,
    currency: invoice.currency.toLowerCase(),
    auto_advance: false,
    pending_invoice_items_behavior: "exclude",
    collection_method: plan.collection.method,
    ...(plan.collection.days_until_due !== null ? { days_until_due: plan.collection.days_until_due } : {}),
    description:
      n === 1
        ? `Tally invoice ${label}, ${invoice.period.start.slice(0, 10)} to ${invoice.period.end.slice(0, 10)}`
        : `Tally invoice ${label} (part ${part.part} of ${n}), ${invoice.period.start.slice(0, 10)} to ${invoice.period.end.slice(0, 10)}`,
    metadata: {
      tally_invoice: invoice.id,
      tally_number: invoice.number ?? "",
      tally_part: String(part.part),
      tally_parts: String(n),
      tally_total: String(plan.total),
    },
  };
}

/**
 * One Tally line as a Stripe line: the integer `amount` Tally rounded (never re-priced from
 * quantity × unit price, which would round again), the service period, and back-links.
 * Stripe's period is inclusive at both ends; Tally's is `[start, end)`, hence `end - 1` second.
 */
export function lineParams(invoice: Invoice, line: InvoiceLine): Stripe.InvoiceAddLinesParams.Line {
  const start = seconds(line.period.start);
  const end = Math.max(start, seconds(line.period.end) - 1);
  const metadata: Record<string, string> = {
    tally_invoice: invoice.id,
    tally_line: String(line.number),
  };
  if (line.meter !== null) metadata.meter = line.meter;
  if (line.snapshot !== undefined) metadata.id_digest = line.snapshot.id_digest;
  if (line.true_up !== undefined) metadata.true_up_of = line.true_up.invoice;
  return {
    amount: line.amount,
    description: line.description.slice(0, 500),
    period: { start, end },
    metadata,
  };
}
