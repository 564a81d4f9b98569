import type { Invoice } from "../billing/index.js";
import type { OutboundEvent } from "./emitter.js";

/**
 * The events Tally raises, built in one place so every producer gives the same shape and the
 * same deterministic id (the `webhook-id`): raising one twice (a retried close, a redelivered
 * Stripe webhook) is delivered once.
 */

/** What every invoice event carries of the invoice (thin: fetch `GET /v1/invoices/:id` for lines). */
export function invoiceData(inv: Invoice): Record<string, unknown> {
  return {
    id: inv.id,
    object: inv.kind ?? "invoice",
    number: inv.number,
    status: inv.status,
    customer: inv.customer,
    subscription: inv.subscription,
    currency: inv.currency,
    currency_exponent: inv.currency_exponent,
    subtotal: inv.subtotal,
    total: inv.total,
    period: { start: inv.period.start, end: inv.period.end },
    finalized_at: inv.finalized_at,
    line_count: inv.lines.length,
  };
}

/** `invoice.finalized`: an invoice or credit note was finalized by the close. */
export function invoiceFinalized(inv: Invoice): OutboundEvent {
  return { id: `evt_invoice_finalized_${inv.id}`, type: "invoice.finalized", data: invoiceData(inv) };
}

/** `invoice.pushed`: the invoice is in Stripe with matching totals. */
export function invoicePushed(inv: Invoice, stripeInvoices: readonly (string | null)[]): OutboundEvent {
  return {
    id: `evt_invoice_pushed_${inv.id}`,
    type: "invoice.pushed",
    data: { invoice: invoiceData(inv), stripe_invoices: stripeInvoices.filter((s) => s !== null) },
  };
}

/**
 * `invoice.push_failed`: a push attempt failed (or Stripe's totals differ: `total_mismatch`).
 * One event per attempt number, so a receiver sees each failure, and a retried push of the same
 * attempt is deduplicated.
 */
export function invoicePushFailed(
  inv: Invoice,
  error: { code: string; message: string },
  attempt: number,
): OutboundEvent {
  return {
    id: `evt_invoice_push_failed_${inv.id}_${attempt}`,
    type: "invoice.push_failed",
    data: { invoice: invoiceData(inv), error: { code: error.code, message: error.message }, attempt },
  };
}

/** `invoice.paid`: every Stripe invoice the Tally invoice was pushed as is paid. */
export function invoicePaid(
  invoice: string,
  parts: readonly { stripe_invoice: string; event: string }[],
): OutboundEvent {
  return { id: `evt_invoice_paid_${invoice}`, type: "invoice.paid", data: { invoice, stripe: parts } };
}
