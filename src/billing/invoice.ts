import { createHash } from "node:crypto";
import type { LineItem, LinePeriod } from "../rating/index.js";
import type { RatingRecord } from "./build.js";

/**
 * What one metered quantity was read from (invariant 10: every number is explainable): the meter
 * version, the bitemporal cut (event time in the service period, received at or before `cutoff`),
 * the watermark the read was complete up to, how many events it counted and an
 * order-independent digest of their ids that anyone can recompute through the API.
 */
export interface UsageSnapshot {
  meter: string;
  meter_version: number;
  /** Events received after this instant are not in the quantity (they become true-ups). */
  cutoff: string;
  /** The read was complete up to this instant (always at or after `cutoff`). */
  watermark: string;
  quantity: string;
  event_count: number;
  /** Hex digest of the exact event ids counted (see `idDigest`). */
  id_digest: string;
}

/** One line of a stored invoice: a rated line plus where its numbers came from. */
export interface InvoiceLine extends LineItem {
  /** 1-based position on the invoice, stable forever (the Stripe push and journals refer to it). */
  readonly number: number;
  /** Usage lines: the snapshot behind the quantity. */
  readonly snapshot?: UsageSnapshot;
  /** True-up lines: late events of an earlier period, billed with that period as service period. */
  readonly true_up?: {
    /** The invoice that billed the period first. */
    readonly invoice: string;
    readonly billed_quantity: string;
    readonly billed_amount: number;
  };
}

/** An invoice's lifecycle: drafts may be rebuilt; a finalized invoice never changes. */
export type InvoiceStatus = "draft" | "finalized";

/**
 * What a document is. An `invoice` charges (total ≥ 0); a `credit_note` gives money back for
 * finalized invoices (negative true-up lines the next invoice could not absorb), with its own
 * gapless number series `<issuer>-CN`. Both are immutable once finalized.
 */
export type DocumentKind = "invoice" | "credit_note";

/**
 * The id of the true-up-only invoice of an ended subscription for the round (one billing interval
 * after its last period, laid out like its periods) starting at `roundStart`: the same on every
 * run, so late usage of an ended subscription is billed once.
 */
export function adjustmentId(subscription: string, roundStart: string): string {
  const h = createHash("sha256").update(`${subscription}\u0000adjustment\u0000${roundStart}`).digest("hex");
  return `inv_${h.slice(0, 24)}`;
}

/** The id of the credit note issued with invoice `invoiceId` (one at most per invoice or round). */
/** True for an id the close gives a document (`inv_…` invoices, `cn_…` credit notes). */
export function isDocumentId(id: string): boolean {
  return /^(inv|cn)_[0-9a-f]{24}$/.test(id);
}

export function creditNoteId(invoiceId: string): string {
  return `cn_${createHash("sha256").update(`credit_note\u0000${invoiceId}`).digest("hex").slice(0, 24)}`;
}

/** The number series of credit notes of an issuer: `TALLY` → `TALLY-CN` (`TALLY-CN-000001`). */
export function creditNotePrefix(issuerPrefix: string): string {
  return `${issuerPrefix}-CN`;
}

/** A stored invoice (snake_case: a wire format, like the rating output it carries). */
export interface Invoice {
  /**
   * Deterministic, so a re-run close finds it: an invoice from the subscription and where its
   * service starts (`invoiceId`), a true-up-only invoice from its round (`adjustmentId`), a credit
   * note from the invoice or round it was issued with (`creditNoteId`).
   */
  readonly id: string;
  /** Absent on documents stored before credit notes existed: those are invoices. */
  readonly kind?: DocumentKind;
  readonly status: InvoiceStatus;
  /** Gapless per issuer prefix (`TALLY-000042`), assigned at finalization; null on drafts. */
  readonly number: string | null;
  readonly issuer_prefix: string;
  readonly customer: string;
  readonly customer_version: number;
  readonly subscription: string;
  readonly subscription_version: number;
  /** Plans billed (several after a plan change), with the versions used. */
  readonly plans: readonly { readonly key: string; readonly version: number }[];
  readonly currency: string;
  readonly currency_exponent: number;
  /** The billing period `[start, end)`. */
  readonly period: LinePeriod;
  /** The usage snapshot's cutoff (see {@link UsageSnapshot.cutoff}). */
  readonly cutoff: string;
  readonly lines: readonly InvoiceLine[];
  /** How the period was rated (plans by version, quantities, seats): a true-up rates it again. */
  readonly rating: RatingRecord;
  /**
   * Earlier periods trued up on this invoice, with the quantities they are now billed at (per
   * segment, by meter): the next true-up of such a period starts from these.
   */
  readonly true_ups: readonly {
    readonly invoice: string;
    readonly usage: readonly Record<string, string>[];
  }[];
  /**
   * Invoices: the credit note carrying the negative true-up lines of the same close round, if
   * any. The close finalizes it right after this invoice (and after a crash, on its next run).
   */
  readonly credit_note?: string;
  /** Credit notes: the finalized invoices it credits (each line names its own in `true_up.invoice`). */
  readonly credits?: readonly string[];
  /** Credit notes: the invoice issued in the same round, or null when the round had only credits. */
  readonly issued_with?: string | null;
  /** Invoices ≥ 0; credit notes < 0 (amounts keep the sign of the true-up lines they carry). */
  readonly subtotal: number;
  readonly total: number;
  readonly created_at: string;
  readonly finalized_at: string | null;
}
