import type Stripe from "stripe";
import { webhookEvents } from "./metrics.js";
import type { PaymentState, PushStore, StripePayments } from "./push-store.js";

/** The invoice events recorded, and the payment state each one means. */
const recorded = {
  "invoice.paid": "paid",
  "invoice.payment_failed": "payment_failed",
  "invoice.voided": "void",
  "invoice.marked_uncollectible": "uncollectible",
} as const satisfies Record<string, PaymentState["status"]>;

/**
 * How far along a Stripe invoice's payment is (https://docs.stripe.com/invoicing/integration/workflow-transitions):
 * open → (payment_failed, still open) → uncollectible → paid or void; paid and void are final.
 * An event never moves a state to a lower rank, whatever order deliveries arrive in; within
 * one rank (a second failed payment) the later event (`created`) wins.
 */
const rank: Record<PaymentState["status"], number> = {
  open: 0,
  payment_failed: 1,
  uncollectible: 2,
  paid: 3,
  void: 3,
};

/** How many applied event ids a record remembers (Stripe redelivers for up to 3 days, rarely many). */
const rememberedEvents = 200;

/**
 * The parts of a pushed invoice and who paid them, once every Stripe invoice it was pushed as
 * is paid (an invoice pushed in several parts is paid when all are); null before that.
 */
export async function paidParts(
  store: PushStore,
  invoice: string,
): Promise<{ stripe_invoice: string; event: string }[] | null> {
  const [push, pay] = await Promise.all([store.get(invoice), store.payments(invoice)]);
  const ids = (push?.parts ?? []).map((p) => p.stripe_invoice);
  if (ids.length === 0 || pay === null) return null;
  const out: { stripe_invoice: string; event: string }[] = [];
  for (const id of ids) {
    const p = id === null ? undefined : pay.parts[id];
    if (id === null || p?.status !== "paid") return null;
    out.push({ stripe_invoice: id, event: p.event });
  }
  return out;
}

export type WebhookOutcome = "applied" | "duplicate" | "stale" | "ignored";

/**
 * The decision for one event on the current payments record (pure): apply, or why not.
 * Duplicates are recognised by event id; an older or lower-ranked state never overwrites.
 */
export function decidePayment(
  cur: StripePayments | null,
  event: { id: string; created: number; stripeInvoice: string },
  next: PaymentState["status"],
): "apply" | "duplicate" | "stale" {
  if (cur?.events.includes(event.id)) return "duplicate";
  const prev = cur?.parts[event.stripeInvoice];
  if (prev === undefined) return "apply";
  if (rank[next] > rank[prev.status]) return "apply";
  if (rank[next] === rank[prev.status] && event.created > prev.event_created && next === prev.status)
    return "apply";
  return "stale";
}

/**
 * Records a verified Stripe event on the payments record of the Tally invoice it belongs to
 * (found by the Stripe invoice's `tally_invoice` metadata, which the push sets). Events of other
 * types, or of Stripe invoices Tally did not push, are acknowledged and ignored.
 */
export async function recordStripeEvent(store: PushStore, event: Stripe.Event): Promise<WebhookOutcome> {
  const next = (recorded as Record<string, PaymentState["status"] | undefined>)[event.type];
  const obj = event.data.object as Partial<Stripe.Invoice>;
  const tallyInvoice = obj.metadata?.tally_invoice;
  if (next === undefined || obj.object !== "invoice" || typeof obj.id !== "string" || !tallyInvoice) {
    webhookEvents.inc({ outcome: "ignored" });
    return "ignored";
  }
  const stripeInvoice = obj.id;
  const partText = obj.metadata?.tally_part;
  let outcome: WebhookOutcome = "applied";
  await store.updatePayments(tallyInvoice, (cur) => {
    const d = decidePayment(cur, { id: event.id, created: event.created, stripeInvoice }, next);
    outcome = d === "apply" ? "applied" : d;
    const events = [...(cur?.events ?? []), event.id].slice(-rememberedEvents);
    if (d === "duplicate") return null;
    return {
      invoice: tallyInvoice,
      parts:
        d === "apply"
          ? {
              ...cur?.parts,
              [stripeInvoice]: {
                status: next,
                event: event.id,
                event_created: event.created,
                ...(next === "paid" && typeof obj.amount_paid === "number"
                  ? { amount_paid: obj.amount_paid }
                  : {}),
                part: partText !== undefined && /^\d+$/.test(partText) ? Number(partText) : null,
              },
            }
          : (cur?.parts ?? {}),
      // A stale event is remembered too, so its redelivery is a duplicate.
      events,
      updated_at: new Date().toISOString(),
    };
  });
  webhookEvents.inc({ outcome });
  return outcome;
}
