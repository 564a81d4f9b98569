import type Stripe from "stripe";
import type { Invoice } from "../../billing/index.js";
import type { CreditNotePush } from "./push-store.js";

/** Idempotency key of the k-th Stripe credit note of a Tally credit note (k is 1-based). */
export const creditNoteKey = (creditNote: string, k: number) => `tally:${creditNote}:credit_note:${k}`;

/**
 * What one Stripe invoice (a part of a credited Tally invoice) can still take, as Stripe reads it:
 * a credit note first reduces `amount_remaining` (pre-payment); the excess needs a refund, a
 * customer-balance credit or an out-of-band amount summing to it, and cannot exceed what was
 * paid and not yet credited (https://docs.stripe.com/api/credit_notes/create).
 */
export interface PartRoom {
  invoice: string;
  part: number;
  stripe_invoice: string;
  /** `amount_remaining` (0 unless open or uncollectible). */
  pre: number;
  /** `amount_paid − post_payment_credit_notes_amount`. */
  post: number;
}

export class CreditPlanError extends Error {
  override name = "CreditPlanError";
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Splits a Tally credit note into Stripe credit notes (pure). The rule: Stripe credits one
 * invoice per credit note and never more than that invoice's remaining amount, so
 * - the lines are grouped by the invoice they credit (`true_up.invoice`), in `credits` order;
 * - each group is laid over that invoice's Stripe parts in part order, each part taking what it
 *   can still take (pre-payment room first, then paid room), a line that does not fit being
 *   split across consecutive parts (both pieces keep its `tally_line`);
 * - one Stripe credit note per (credited invoice, part) that receives anything, numbered k = 1..n
 *   in that order. Whatever lands beyond a part's `amount_remaining` is credited to the
 *   customer's Stripe balance (`credit_amount`), applied to their next invoice: money Tally gives
 *   back as credit, not as a refund.
 * More credit than the parts can take is refused (`credit_exceeds_invoice`): never a partial push.
 */
export function planCreditNote(cn: Invoice, rooms: readonly PartRoom[]): CreditNotePush[] {
  const order = [...(cn.credits ?? [])];
  const byInvoice = new Map<string, { line: number; amount: number; description: string }[]>();
  for (const l of [...cn.lines].sort((a, b) => a.number - b.number)) {
    const target = l.true_up?.invoice;
    if (target === undefined) {
      throw new CreditPlanError(
        "credit_line_without_invoice",
        `line ${l.number} of ${cn.id} names no credited invoice (true_up.invoice)`,
      );
    }
    if (l.amount > 0) {
      throw new CreditPlanError("credit_line_positive", `line ${l.number} of ${cn.id} is positive`);
    }
    if (l.amount === 0) continue;
    if (!order.includes(target)) order.push(target);
    const list = byInvoice.get(target) ?? [];
    list.push({ line: l.number, amount: -l.amount, description: l.description.slice(0, 500) });
    byInvoice.set(target, list);
  }
  const out: CreditNotePush[] = [];
  for (const target of order) {
    const lines = byInvoice.get(target);
    if (lines === undefined) continue;
    const parts = rooms.filter((r) => r.invoice === target).sort((a, b) => a.part - b.part);
    const left = parts.map((p) => ({ ...p, room: p.pre + p.post, given: [] as CreditNotePush["lines"] }));
    let i = 0;
    for (const l of lines) {
      let rest = l.amount;
      while (rest > 0) {
        while (i < left.length && left[i]!.room === 0) i++;
        const p = left[i];
        if (p === undefined) {
          const room = parts.reduce((s, x) => s + x.pre + x.post, 0);
          const want = lines.reduce((s, x) => s + x.amount, 0);
          throw new CreditPlanError(
            "credit_exceeds_invoice",
            `${cn.id} credits ${want} on ${target}, whose Stripe invoices can take ${room}`,
          );
        }
        const take = Math.min(rest, p.room);
        p.given.push({ line: l.line, amount: take, description: l.description });
        p.room -= take;
        rest -= take;
      }
    }
    for (const p of left) {
      if (p.given.length === 0) continue;
      const amount = p.given.reduce((s, g) => s + g.amount, 0);
      out.push({
        k: out.length + 1,
        invoice: target,
        part: p.part,
        stripe_invoice: p.stripe_invoice,
        amount,
        credit_amount: Math.max(0, amount - p.pre),
        lines: p.given,
        stripe_credit_note: null,
        stripe_total: null,
      });
    }
  }
  return out;
}

/** The `POST /v1/credit_notes` parameters of one planned Stripe credit note. */
export function creditNoteParams(cn: Invoice, p: CreditNotePush, n: number): Stripe.CreditNoteCreateParams {
  const label = cn.number ?? cn.id;
  return {
    invoice: p.stripe_invoice,
    lines: p.lines.map((l) => ({
      type: "custom_line_item",
      unit_amount: l.amount,
      quantity: 1,
      description: l.description,
      metadata: { tally_credit_note: cn.id, tally_line: String(l.line) },
    })),
    ...(p.credit_amount > 0 ? { credit_amount: p.credit_amount } : {}),
    memo: `Tally credit note ${label}${n > 1 ? ` (${p.k} of ${n})` : ""}`.slice(0, 500),
    metadata: {
      tally_credit_note: cn.id,
      tally_number: cn.number ?? "",
      tally_invoice: p.invoice,
      tally_part: String(p.k),
      tally_parts: String(n),
      tally_total: String(-cn.total),
    },
  };
}
